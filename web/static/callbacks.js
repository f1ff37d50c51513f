// The callback list, in the agent's desk and in the supervisor's ticket view: open tasks, oldest
// missed first, with a "Call back" button when the viewer has a phone (their phone rings first,
// then the citizen's). Refreshed every few seconds and after each click; text via textContent.
"use strict";

const callbackList = { csrf: null, canDial: false, tasks: [], today: null, timer: null };

function callbackStatus(task) {
  if (task.status === "retry" && task.next_attempt_at) return `${t("cb_retry")} ${task.next_attempt_at}`;
  if (task.status === "gave_up") return `${t("cb_gave_up")}: ${task.stopped_because || ""}`;
  return t(`cb_${task.status}`);
}

function renderCallbacks() {
  const body = document.getElementById("callback-rows");
  body.replaceChildren();
  const tasks = callbackList.tasks;
  document.getElementById("no-callbacks").hidden = tasks.length > 0;
  document.getElementById("callback-table").hidden = tasks.length === 0;
  for (const task of tasks) {
    const row = document.createElement("tr");
    row.dataset.callback = String(task.id);
    row.dataset.status = task.status;
    for (const value of [
      `${task.caller_number} ${task.caller_name || ""}`.trim(),
      task.kind === "visit" ? `${task.ticket} (${t("cb_kind_visit")})` : task.ticket,
      String(task.missed_calls),
      task.requested_at,
      String(task.attempts),
      callbackStatus(task),
    ]) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.append(cell);
    }
    const action = document.createElement("td");
    if (callbackList.canDial && (task.status === "due" || task.status === "retry")) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "call-back";
      button.textContent = t("call_back");
      button.addEventListener("click", () => dialCallback(task.id));
      action.append(button);
    }
    row.append(action);
    body.append(row);
  }
  const today = callbackList.today;
  const figures = document.getElementById("callback-figures");
  if (today && figures) {
    const rate = today.on_time_rate === null ? "–" : `${(today.on_time_rate * 100).toFixed(1)} %`;
    figures.textContent = `${t("cb_today")}: ${today.requested} · ${t("cb_reached")} ${today.reached}`
      + ` · ${t("cb_gave_up")} ${today.gave_up} · ${t("cb_on_time")} ${rate} (${today.on_time_minutes} min)`;
  }
}

async function loadCallbacks() {
  const response = await fetch("/api/v1/callbacks");
  if (!response.ok) return;
  const listed = await response.json();
  callbackList.tasks = listed.callbacks;
  callbackList.today = listed.today;
  renderCallbacks();
}

async function dialCallback(taskId) {
  const result = document.getElementById("callback-result");
  const response = await fetch(`/api/v1/callbacks/${taskId}/dial`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": callbackList.csrf() || "" },
    body: "{}",
  });
  const body = await response.json().catch(() => ({}));
  result.textContent = response.ok ? t("cb_ringing_you") : `${t("failed")} ${body.error || response.statusText}`;
  await loadCallbacks();
}

function buildCallbackTable() {
  // The same table on both pages: built here once, into #callback-list.
  const holder = document.getElementById("callback-list");
  const empty = document.createElement("p");
  empty.id = "no-callbacks";
  empty.className = "quiet";
  empty.dataset.text = "no_callbacks";
  const table = document.createElement("table");
  table.className = "board";
  table.id = "callback-table";
  table.hidden = true;
  const head = document.createElement("tr");
  for (const key of ["caller", "ticket", "cb_missed", "cb_first_missed", "cb_attempts", "status", ""]) {
    const cell = document.createElement("th");
    if (key) cell.dataset.text = key;
    head.append(cell);
  }
  const thead = document.createElement("thead");
  thead.append(head);
  const body = document.createElement("tbody");
  body.id = "callback-rows";
  table.append(thead, body);
  holder.replaceChildren(empty, table);
  applyTexts(holder);
}

function followCallbacks(currentCsrf, canDial) {
  buildCallbackTable();
  callbackList.csrf = currentCsrf;
  callbackList.canDial = canDial;
  document.addEventListener("languagechange", renderCallbacks);
  loadCallbacks();
  callbackList.timer = setInterval(loadCallbacks, 3000);
}
