// Shared by the pages that follow the live socket: a stats.delta merged into the snapshot.
"use strict";

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
