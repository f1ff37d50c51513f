// The supervisor's view: a snapshot over the WebSocket, then deltas merged into it. Every value
// that came from a caller or the PBX is put on the page with textContent, never as HTML.
"use strict";

const state = { snapshot: null, seq: 0, csrf: null, reviews: [], reviewsSeen: null };

function percent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)} %`;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  const whole = Math.round(value);
  return whole < 60 ? `${whole} s` : `${Math.floor(whole / 60)} min ${whole % 60} s`;
}

function sinceText(isoTime) {
  // Time in state, against the session's own clock (a replay's "now" is the transcript's).
  const now = state.snapshot && state.snapshot.at ? Date.parse(state.snapshot.at) : Date.now();
  return seconds(Math.max(0, (now - Date.parse(isoTime)) / 1000));
}

function renderQueues(snapshot) {
  const holder = document.getElementById("queues");
  const template = document.getElementById("queue-tile");
  const queues = Object.entries(snapshot.queues || {});
  document.getElementById("no-queues").hidden = queues.length > 0;
  holder.replaceChildren();
  for (const [name, figures] of queues) {
    const tile = template.content.cloneNode(true);
    const set = (selector, text) => { tile.querySelector(selector).textContent = text; };
    tile.querySelector(".tile").dataset.queue = name;
    set(".queue-name", name);
    set(".waiting", `${t("waiting_now")}: ${figures.waiting_now}`);
    set(".answer_rate", percent(figures.answer_rate));
    set(".answered_offered", `${figures.answered} / ${figures.offered}`);
    set(".longest_wait", seconds(figures.longest_wait_seconds));
    set(".service_level", `${percent(figures.service_level)} (${figures.service_level_seconds} s)`);
    set(".asa", seconds(figures.asa_seconds));
    set(".aht", seconds(figures.aht_seconds));
    set(".abandoned", `${figures.abandoned} (${t("short_abandoned")} ${figures.short_abandoned})`);
    set(".timed_out", String(figures.timed_out));
    const recent = (snapshot.last_15_minutes || {})[name];
    set(".recent", recent ? `${recent.answered} / ${recent.offered}, ${percent(recent.answer_rate)}` : "–");
    if (figures.waiting_now > 0) tile.querySelector(".tile").classList.add("busy");
    applyTexts(tile);
    holder.append(tile);
  }
}

function answerLabel(scale, code) {
  const answer = (scale || []).find((each) => each.code === code);
  if (!answer) return code === "not_rated" ? t("not_rated") : code;
  return language.startsWith("zh") ? answer.zh : answer.en;
}

function renderSatisfaction(snapshot) {
  // A tile for the whole centre, then one per queue: rates, and each answer's count.
  const satisfaction = snapshot.satisfaction;
  const holder = document.getElementById("satisfaction");
  holder.replaceChildren();
  if (!satisfaction) return;
  const template = document.getElementById("satisfaction-tile");
  const tiles = [["all", t("all_queues"), satisfaction.today, satisfaction.last_15_minutes]];
  for (const [queue, figures] of Object.entries(satisfaction.queues || {})) {
    tiles.push([queue, queue, figures, (satisfaction.last_15_minutes_queues || {})[queue]]);
  }
  document.getElementById("no-ratings").hidden = satisfaction.today.rated + satisfaction.today.not_rated > 0;
  for (const [key, title, figures, recent] of tiles) {
    const tile = template.content.cloneNode(true);
    const set = (selector, text) => { tile.querySelector(selector).textContent = text; };
    tile.querySelector(".tile").dataset.satisfaction = key;
    set(".rating-name", title);
    set(".rated", `${t("rated")} ${figures.rated} · ${t("not_rated")} ${figures.not_rated}`);
    set(".satisfaction_rate", percent(figures.satisfaction_rate));
    set(".participation_rate", percent(figures.participation_rate));
    const answers = tile.querySelector(".answers");
    for (const [code, count] of Object.entries(figures.answers)) {
      const line = document.createElement("div");
      const name = document.createElement("dt");
      name.textContent = answerLabel(satisfaction.scale, code);
      const value = document.createElement("dd");
      value.textContent = String(count);
      value.dataset.answer = code;
      line.append(name, value);
      answers.append(line);
    }
    set(".recent", recent ? `${percent(recent.satisfaction_rate)} (${recent.rated})` : "–");
    if (figures.to_review > 0) tile.querySelector(".tile").classList.add("busy");
    applyTexts(tile);
    holder.append(tile);
  }
  const waiting = satisfaction.today.to_review;
  if (waiting !== state.reviewsSeen) {
    state.reviewsSeen = waiting;
    loadReviews();
  }
}

async function loadReviews() {
  // Tickets whose citizen was dissatisfied, until a supervisor marks them reviewed.
  const response = await fetch("/api/v1/tickets?review=1");
  if (!response.ok) return;
  state.reviews = await response.json();
  renderReviews();
}

function renderReviews() {
  const body = document.getElementById("reviews");
  body.replaceChildren();
  const reviews = state.reviews || [];
  document.getElementById("no-reviews").hidden = reviews.length > 0;
  document.getElementById("review-table").hidden = reviews.length === 0;
  const scale = state.snapshot && state.snapshot.satisfaction ? state.snapshot.satisfaction.scale : [];
  for (const ticket of reviews) {
    const row = document.createElement("tr");
    row.dataset.ticket = ticket.number;
    const rating = ticket.rating || {};
    for (const text of [
      ticket.number,
      `${ticket.caller_number || ""} ${ticket.caller_name || ""}`.trim(),
      answerLabel(scale, rating.code),
      rating.agent || "–",
      rating.at || "",
    ]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    const action = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = t("reviewed");
    button.addEventListener("click", async () => {
      const done = await fetch(`/api/v1/tickets/${encodeURIComponent(ticket.number)}/reviewed`, {
        method: "POST", headers: { "X-CSRF-Token": state.csrf || "" },
      });
      if (done.ok) loadReviews();
    });
    action.append(button);
    row.append(action);
    body.append(row);
  }
}

function renderAgents(snapshot) {
  const body = document.getElementById("agents");
  body.replaceChildren();
  for (const [interfaceName, agent] of Object.entries(snapshot.agents || {})) {
    const row = document.createElement("tr");
    row.dataset.agent = interfaceName;
    const cells = [
      agent.name ? `${agent.name} (${interfaceName})` : interfaceName,
      `${t(`state_${agent.state}`)}${agent.state_since ? ` · ${sinceText(agent.state_since)}` : ""}`,
      agent.caller || "",
      agent.pause_reason || "",
      String(agent.answered),
      seconds(agent.talk_seconds),
      agentSatisfaction(snapshot, interfaceName),
    ];
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    row.children[1].className = `state state-${agent.state}`;
    body.append(row);
  }
}

function agentSatisfaction(snapshot, interfaceName) {
  const figures = ((snapshot.satisfaction || {}).agents || {})[interfaceName];
  return figures && figures.rated ? `${percent(figures.satisfaction_rate)} (${figures.rated})` : "–";
}

function renderPbx(snapshot) {
  const banner = document.getElementById("pbx-banner");
  const pbx = snapshot.pbx || {};
  if (pbx.up === false) {
    const since = pbx.since ? new Date(pbx.since * 1000).toLocaleString(document.documentElement.lang) : "?";
    banner.textContent = `${t("pbx_down")} ${since}${pbx.problem ? ` (${pbx.problem})` : ""}`;
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

function renderHours(snapshot) {
  // One chart per queue: a bar per hour, its height the calls offered, its label the answer rate.
  const holder = document.getElementById("hours");
  holder.replaceChildren();
  for (const [queue, hours] of Object.entries(snapshot.hours || {})) {
    const entries = Object.entries(hours);
    if (!entries.length) continue;
    const most = Math.max(1, ...entries.map(([, figures]) => figures.offered));
    const chart = document.createElement("figure");
    chart.className = "hour-chart";
    chart.dataset.queue = queue;
    const caption = document.createElement("figcaption");
    caption.textContent = `${queue} · ${t("volume")} / ${t("answer_rate")} / ${t("satisfaction_rate")}`;
    const rated = ((snapshot.satisfaction || {}).hours || {})[queue] || {};
    const bars = document.createElement("div");
    bars.className = "bars";
    for (const [hour, figures] of entries) {
      const column = document.createElement("div");
      column.className = "bar-column";
      const rate = document.createElement("span");
      rate.className = "bar-rate";
      rate.textContent = percent(figures.answer_rate);
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.height = `${Math.round((figures.offered / most) * 100)}%`;
      bar.title = `${hour}:00 · ${figures.answered} / ${figures.offered}`;
      const count = document.createElement("span");
      count.className = "bar-count";
      count.textContent = String(figures.offered);
      const label = document.createElement("span");
      label.className = "bar-hour";
      label.textContent = `${hour}:00`;
      const satisfied = document.createElement("span");
      satisfied.className = "bar-satisfaction";
      satisfied.textContent = rated[hour] && rated[hour].rated ? percent(rated[hour].satisfaction_rate) : "";
      const track = document.createElement("div");
      track.className = "bar-track";
      track.append(bar);
      column.append(rate, count, track, label, satisfied);
      bars.append(column);
    }
    chart.append(caption, bars);
    holder.append(chart);
  }
}

function render() {
  if (!state.snapshot) return;
  renderQueues(state.snapshot);
  renderSatisfaction(state.snapshot);
  renderHours(state.snapshot);
  renderAgents(state.snapshot);
  renderPbx(state.snapshot);
}

function onLive(message, socket) {
  if (message.type === "snapshot") {
    state.snapshot = message;
    state.seq = message.seq || 0;
    render();
  } else if (message.type === "stats.delta" && state.snapshot) {
    if (state.seq && message.seq !== state.seq + 1) {
      socket.close();  // missed a change: start again from a fresh snapshot
      return;
    }
    state.seq = message.seq;
    mergeDelta(state.snapshot, message);
    render();
  }
}

async function start() {
  document.addEventListener("languagechange", () => { render(); renderReviews(); });
  const who = await openSession(() => state.csrf);
  if (!who) return;
  if (who.user.role === "agent") {
    window.location.assign("/agent");  // agents work in their own view
    return;
  }
  state.csrf = who.csrf;
  followLive(onLive);
}

document.addEventListener("DOMContentLoaded", start);
