// The agent's view: their phone's state, pause and queue log-in, and the caller popped up the
// moment their phone rings (a call.ringing message on the live socket), with the ticket to edit
// and the caller's earlier tickets and calls. All text goes in with textContent.
"use strict";

const me = { user: null, csrf: null, snapshot: null, ticket: null, offerTimer: null };

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json", "X-CSRF-Token": me.csrf || "" };
  const response = await fetch(path, { ...options, headers: { ...headers, ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function listInto(id, lines) {
  const list = document.getElementById(id);
  list.replaceChildren(...lines.map((line) => {
    const item = document.createElement("li");
    item.textContent = line;
    return item;
  }));
}

function renderPhone() {
  const snapshot = me.snapshot || {};
  const agent = (snapshot.agents || {})[me.user.agent] || {};
  text("my-interface", me.user.agent || t("no_phone"));
  const stateCell = document.getElementById("my-state");
  stateCell.textContent = agent.state ? t(`state_${agent.state}`) : "–";
  stateCell.className = `state state-${agent.state || "unknown"}`;
  text("my-reason", agent.paused && agent.pause_reason ? `(${agent.pause_reason})` : "");
  const holder = document.getElementById("queue-buttons");
  holder.replaceChildren();
  for (const queue of Object.keys(snapshot.queues || {})) {
    for (const [key, member] of [["queue_login", true], ["queue_logout", false]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `${t(key)} ${queue}`;
      button.dataset.queue = queue;
      button.addEventListener("click", () => act("/api/v1/agent/queues", { queue, member }));
      holder.append(button);
    }
  }
}

async function act(path, body) {
  try {
    await api(path, { method: "POST", body: JSON.stringify(body) });
    text("action-result", "");
  } catch (error) {
    text("action-result", `${t("failed")} ${error.message}`);
  }
}

function showTicket(ticket) {
  me.ticket = ticket;
  const form = document.getElementById("ticket-form");
  form.hidden = !ticket;
  if (!ticket) return;
  text("ticket-status", t(`status_${ticket.status}`));
  document.getElementById("ticket-category").value = ticket.category || "";
  document.getElementById("ticket-department").value = ticket.department || "";
  document.getElementById("ticket-description").value = ticket.description || "";
  document.getElementById("sign-button").hidden = ticket.status !== "new";
}

async function popUp(message) {
  document.getElementById("idle-note").hidden = true;
  document.getElementById("popup").hidden = false;
  text("popup-caller", message.caller_number);
  text("popup-ticket", message.ticket || t("no_ticket"));
  showTicket(message.ticket ? await api(`/api/v1/tickets/${encodeURIComponent(message.ticket)}`) : null);
  const caller = encodeURIComponent(message.caller_number);
  const tickets = await api(`/api/v1/tickets?caller=${caller}&limit=10`);
  listInto("earlier-tickets", tickets
    .filter((ticket) => ticket.number !== message.ticket)
    .map((ticket) => `${ticket.opened_at} · ${ticket.number} · ${t(`status_${ticket.status}`)} · ${ticket.category || ""}`));
  const calls = await api(`/api/v1/calls?caller=${caller}&limit=10`);
  listInto("earlier-calls", calls
    .filter((call) => call.uniqueid !== message.uniqueid)
    .map((call) => `${call.started_at} · ${call.outcome} · ${call.ticket || ""}`));
}

async function saveTicket(extra = {}) {
  const fields = {
    category: document.getElementById("ticket-category").value,
    department: document.getElementById("ticket-department").value,
    description: document.getElementById("ticket-description").value,
    ...extra,
  };
  try {
    const ticket = await api(`/api/v1/tickets/${encodeURIComponent(me.ticket.number)}`, {
      method: "PATCH",
      body: JSON.stringify(fields),
    });
    showTicket(ticket);
    text("ticket-result", t("saved"));
  } catch (error) {
    text("ticket-result", `${t("failed")} ${error.message}`);
  }
}

function onLive(message) {
  if (message.type === "snapshot") {
    me.snapshot = message;
    renderPhone();
  } else if (message.type === "stats.delta" && me.snapshot) {
    mergeDelta(me.snapshot, message);
    renderPhone();
  } else if (message.type === "callback.offer" && message.agent === me.user.agent) {
    showOffer(message);
  } else if (message.type === "call.ringing" && message.agent === me.user.agent) {
    popUp(message).catch((error) => text("ticket-result", `${t("failed")} ${error.message}`));
  }
}

function showOffer(offer) {
  // A callback offered while nobody waits: accepting rings this phone, then the citizen.
  const box = document.getElementById("offer");
  text("offer-caller", `${offer.caller_number} ${offer.caller_name || ""}`.trim());
  text("offer-ticket", offer.ticket);
  text("offer-missed", String(offer.missed_calls));
  box.dataset.callback = String(offer.callback);
  box.hidden = false;
  document.getElementById("offer-accept").onclick = async () => {
    box.hidden = true;
    await dialCallback(offer.callback);
  };
  clearTimeout(me.offerTimer);
  me.offerTimer = setTimeout(() => { box.hidden = true; }, offer.expires_in * 1000);
}

async function start() {
  document.addEventListener("languagechange", renderPhone);
  const who = await openSession(() => me.csrf);
  if (!who) return;
  me.user = who.user;
  me.csrf = who.csrf;
  document.getElementById("pause-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act("/api/v1/agent/pause", { paused: true, reason: document.getElementById("pause-reason").value });
  });
  document.getElementById("unpause-button").addEventListener("click", () => act("/api/v1/agent/pause", { paused: false }));
  document.getElementById("ticket-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveTicket();
  });
  document.getElementById("sign-button").addEventListener("click", () => saveTicket({ status: "signed" }));
  setUpPhonePicker();
  renderPhone();
  followLive(onLive);
  followCallbacks(() => me.csrf, Boolean(me.user.agent));
}

function setUpPhonePicker() {
  // An agent with several desks picks the phone they sit at; the session follows that phone.
  const phones = me.user.phones || [];
  document.getElementById("phone-picker").hidden = phones.length < 2;
  const select = document.getElementById("phone-select");
  select.replaceChildren(...phones.map((phone) => {
    const option = document.createElement("option");
    option.value = phone;
    option.textContent = phone;
    option.selected = phone === me.user.agent;
    return option;
  }));
  select.onchange = async () => {
    try {
      const session = await api("/api/v1/session/phone", {
        method: "POST",
        body: JSON.stringify({ agent: select.value }),
      });
      me.user = session.user;
      me.csrf = session.csrf;
      document.getElementById("popup").hidden = true;
      document.getElementById("idle-note").hidden = false;
      renderPhone();
    } catch (error) {
      text("action-result", `${t("failed")} ${error.message}`);
    }
  };
}

document.addEventListener("DOMContentLoaded", start);
