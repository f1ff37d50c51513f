// Tickets: a filtered list, one ticket's SLA clocks, calls and recordings (played through the
// range endpoint, so the audio element can seek), and the callback list of abandoned callers.
"use strict";

async function getJson(path) {
  const response = await fetch(path);
  if (response.status === 401) {
    window.location.assign("/login");
    throw new Error("login required");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "" : String(value);
  row.append(td);
  return td;
}

function slaText(ticket) {
  if (ticket.on_time === null) return t("sla_running");
  return ticket.on_time ? t("sla_on_time") : t("sla_late");
}

async function search(extra = {}) {
  const query = new URLSearchParams();
  const status = extra.status ?? document.getElementById("filter-status").value;
  if (status) query.set("status", status);
  if (document.getElementById("filter-open").checked) query.set("open", "true");
  if (document.getElementById("filter-overdue").checked) query.set("overdue", "true");
  const caller = document.getElementById("filter-caller").value.trim();
  if (caller) query.set("caller", caller);
  const since = document.getElementById("filter-since").value;
  if (since) query.set("since", since);
  query.set("limit", "200");
  const error = document.getElementById("list-error");
  error.textContent = "";
  try {
    const tickets = await getJson(`/api/v1/tickets?${query}`);
    const body = document.getElementById("ticket-rows");
    body.replaceChildren();
    for (const ticket of tickets) {
      const row = document.createElement("tr");
      row.dataset.ticket = ticket.number;
      row.className = "clickable";
      cell(row, ticket.number);
      cell(row, t(`status_${ticket.status}`));
      cell(row, `${ticket.caller_number || ""} ${ticket.caller_name || ""}`.trim());
      cell(row, ticket.owner_agent || "–");
      cell(row, ticket.opened_at);
      cell(row, slaText(ticket)).className = ticket.on_time === false ? "late" : "";
      row.addEventListener("click", () => showTicket(ticket.number));
      body.append(row);
    }
  } catch (failure) {
    error.textContent = `${t("failed")} ${failure.message}`;
  }
}

function lines(id, values) {
  document.getElementById(id).replaceChildren(...values.map((value) => {
    const item = document.createElement("li");
    item.textContent = value;
    return item;
  }));
}

async function showTicket(number) {
  const ticket = await getJson(`/api/v1/tickets/${encodeURIComponent(number)}`);
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-number").textContent = ticket.number;
  const fields = document.getElementById("detail-fields");
  fields.replaceChildren();
  for (const key of ["status", "caller_number", "caller_name", "category", "description",
    "department", "owner_agent", "opened_at", "signed_at"]) {
    const term = document.createElement("dt");
    term.textContent = t(`field_${key}`);
    const value = document.createElement("dd");
    value.textContent = key === "status" ? t(`status_${ticket.status}`) : ticket[key] ?? "";
    fields.append(term, value);
  }
  lines("detail-clocks", ticket.clocks.map((clock) =>
    `${clock.name}: ${t("due")} ${clock.due} · ${clock.state}${clock.done_at ? ` · ${clock.done_at}` : ""}`));
  lines("detail-calls", ticket.calls.map((call) =>
    `${call.started_at} · ${call.outcome} · ${call.agent || "–"} · ${call.talk_seconds ?? "–"} s`
    + `${call.rating ? ` · ${t("rating")}: ${call.rating}` : ""}`));
  lines("detail-ratings", [
    ticket.rating ? `${t("rating")}: ${ticket.rating.code} · ${ticket.rating.agent || "–"} · ${ticket.rating.at}` : null,
    ticket.visit ? `${t("visit_rating")}: ${ticket.visit.code} · ${ticket.visit.agent || "–"} · ${ticket.visit.at}` : null,
  ].filter(Boolean));
  const visit = document.getElementById("visit-button");
  visit.hidden = !["resolved", "closed"].includes(ticket.status);
  visit.onclick = async () => {
    const response = await fetch(`/api/v1/tickets/${encodeURIComponent(ticket.number)}/visit`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": callbackList.csrf() || "" },
      body: "{}",
    });
    const body = await response.json().catch(() => ({}));
    document.getElementById("visit-result").textContent =
      response.ok ? t("cb_ringing_you") : `${t("failed")} ${body.error || response.statusText}`;
    loadCallbacks();
  };
  const recordings = document.getElementById("detail-recordings");
  recordings.replaceChildren(...ticket.recordings.map((recording) => {
    const figure = document.createElement("figure");
    figure.className = "recording";
    const caption = document.createElement("figcaption");
    caption.textContent = `${recording.recorded_on} · ${recording.agent || "–"} · ${recording.duration_seconds.toFixed(1)} s`;
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "metadata";
    audio.src = recording.audio;
    figure.append(caption, audio);
    return figure;
  }));
}

async function start() {
  let csrf = null;
  const who = await openSession(() => csrf);
  if (!who) return;
  csrf = who.csrf;
  document.getElementById("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  document.getElementById("callbacks").addEventListener("click", () => {
    document.getElementById("filter-status").value = "callback";
    search({ status: "callback" });
  });
  followCallbacks(() => csrf, Boolean(who.user.agent));
  const wanted = new URLSearchParams(window.location.search).get("ticket");
  await search();
  if (wanted) await showTicket(wanted);
}

document.addEventListener("DOMContentLoaded", start);
