// What every page after the login shares: the header (language, who, log out), the live
// socket with its badge, and a stats.delta merged into the snapshot.
"use strict";

async function openSession(currentCsrf) {
  // currentCsrf: the token to log out with (an agent's changes when they pick another phone).
  applyTexts();
  document.getElementById("language").addEventListener("click", switchLanguage);
  const response = await fetch("/api/v1/session");
  if (response.status === 401) {
    window.location.assign("/login");
    return null;
  }
  const who = await response.json();
  const showWho = () => {
    document.getElementById("who").textContent = `${who.user.username} (${t(`role_${who.user.role}`)})`;
  };
  showWho();
  document.addEventListener("languagechange", showWho);
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/api/v1/logout", { method: "POST", headers: { "X-CSRF-Token": currentCsrf() || "" } });
    window.location.assign("/login");
  });
  return who;
}

function setLink(live) {
  const badge = document.getElementById("link-state");
  badge.dataset.text = live ? "live" : "reconnecting";
  badge.textContent = t(badge.dataset.text);
  badge.classList.toggle("live", live);
}

function followLive(onMessage) {
  // The live socket; opened again a second after it closes, the badge saying which it is.
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${window.location.host}/api/v1/live`);
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "snapshot") setLink(true);
    onMessage(message, socket);
  });
  socket.addEventListener("close", () => {
    setLink(false);
    setTimeout(() => followLive(onMessage), 1000);
  });
}

function mergeDelta(snapshot, delta) {
  // Per section, the entries that changed arrive whole; null means the entry is gone.
  for (const [section, entries] of Object.entries(delta)) {
    if (["type", "seq", "at"].includes(section)) continue;
    if (entries === null || typeof entries !== "object" || Array.isArray(entries)) {
      snapshot[section] = entries;
      continue;
    }
    snapshot[section] = snapshot[section] || {};
    for (const [key, value] of Object.entries(entries)) {
      if (value === null) delete snapshot[section][key];
      else snapshot[section][key] = value;
    }
  }
  if (delta.at) snapshot.at = delta.at;
}
