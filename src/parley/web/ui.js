// ui.js: the small helpers every page uses (no framework).

export const $ = (id) => document.getElementById(id);

/** Text made safe to put inside HTML (and attribute values). */
export const escape = (text) =>
  String(text ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

/** Dollars as the pages show them; a dash when unknown. */
export const money = (x) => (typeof x === "number" ? `$${x.toFixed(2)}` : "—");

const STATUS = { disconnected: "Disconnected", connecting: "Connecting…", connected: "Connected", reconnecting: "Reconnecting…" };

/** A call's connection status in words. */
export const statusLabel = (status) => STATUS[status] || STATUS.disconnected;
