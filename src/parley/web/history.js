// Past calls: list, transcript, downloads; a call still in progress is followed live.
import { $, escape, money } from "./ui.js";

const FOLLOW_MS = 1500; // how often an active call's record is read again
const BACKOFF_MAX_MS = 15000;
const LIST_MS = 5000; // the list's statuses, while any listed call is active

function duration(seconds) {
  if (typeof seconds !== "number") return "—";
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  return m ? `${m} min ${s} s` : `${s} s`;
}

// What a person reads; the codes (end_reason, outcome) stay in the JSON downloads.
function outcomeText(call) {
  if (call.outcome_text) return `<span class="badge good">${escape(call.outcome_text)}</span>`;
  const text = escape(call.end_reason_text || call.end_reason || call.status);
  return call.status === "active" ? `<span class="badge">${text}</span>` : text;
}

function names(call) {
  const list = (call.personas || []).map((p) => p.name || p.id);
  return escape(list.length ? list.join(" → ") : call.persona || "—");
}

function rowCells(c) {
  return `
      <td>${escape(new Date(c.created_at).toLocaleString())}</td>
      <td>${names(c)}${c.channel === "phone" ? ` <span class="badge" title="a phone call">phone ${escape(c.caller || "")}</span>` : ""}</td>
      <td class="wide num">${duration(c.duration_seconds)}</td>
      <td>${outcomeText(c)}</td>
      <td class="wide num">$${(c.cost_usd || 0).toFixed(4)}</td>`;
}

function rowFor(id) {
  return [...document.querySelectorAll("tr[data-call]")].find((r) => r.dataset.call === id);
}

// A listed call's row, redrawn only when what it shows changed (the selection stays).
function updateRow(c) {
  const row = rowFor(c.id);
  const cells = rowCells(c);
  if (row && row.dataset.drawn !== cells) {
    row.innerHTML = cells;
    row.dataset.drawn = cells;
  }
}

let listTimer = null;

async function loadCalls() {
  const body = $("calls").querySelector("tbody");
  let calls = [];
  try {
    const r = await fetch("/api/calls");
    if (!r.ok) throw new Error(`${r.status}`);
    calls = await r.json();
  } catch (err) {
    body.innerHTML = `<tr><td colspan="5" class="errors">Could not load calls (${escape(err.message)}).</td></tr>`;
    return;
  }
  if (!calls.length) {
    body.innerHTML = '<tr><td colspan="5" class="empty">No calls yet. <a href="/">Make your first practice call.</a></td></tr>';
    return;
  }
  drawList(calls);
  const wanted = new URLSearchParams(location.search).get("call") || calls[0].id;
  showCall(wanted);
  scheduleList(calls);
}

function drawList(calls) {
  const body = $("calls").querySelector("tbody");
  body.innerHTML = calls.map((c) => `
    <tr data-call="${escape(c.id)}" tabindex="0" aria-label="Call of ${escape(new Date(c.created_at).toLocaleString())}">${rowCells(c)}</tr>`).join("");
  for (const row of body.querySelectorAll("tr[data-call]")) {
    const open = () => showCall(row.dataset.call);
    row.addEventListener("click", open);
    row.addEventListener("keydown", (e) => (e.key === "Enter" || e.key === " ") && (e.preventDefault(), open()));
    row.classList.toggle("selected", row.dataset.call === shown.id);
  }
}

// While a listed call is in progress, its status, duration and cost are read again now and then;
// a failed read just waits for the next (the rows keep what they showed).
function scheduleList(calls) {
  clearTimeout(listTimer);
  if (!calls.some((c) => c.status === "active")) return;
  listTimer = setTimeout(async () => {
    let fresh = calls;
    try {
      const r = await fetch("/api/calls");
      if (r.ok) fresh = await r.json();
    } catch { /* the next round tries again */ }
    const known = new Set(calls.map((c) => c.id));
    if (fresh.length !== calls.length || fresh.some((c) => !known.has(c.id))) drawList(fresh);
    else fresh.forEach(updateRow);
    scheduleList(fresh);
  }, LIST_MS);
}

// The call in the detail panel: which one, its drawn bubbles by item id, the follow timer.
const shown = { id: null, token: 0, bubbles: new Map(), timer: null, delay: FOLLOW_MS };

function said(call) {
  // What was said; tool calls and the notes the server gives the agent stay out.
  return (call.transcript || []).filter((i) => i.text && i.kind === "message" && (i.role === "user" || i.role === "assistant"));
}

function bubbleClass(i) {
  const cut = i.status === "incomplete" || (i.audio_end_ms !== null && i.audio_end_ms !== undefined);
  return `bubble ${i.role === "user" ? "user" : "assistant"}${cut ? " interrupted" : ""}`;
}

function newBubble(i) {
  const el = document.createElement("div");
  el.innerHTML = `<span class="who"></span><span class="text"></span>`;
  return fillBubble(el, i);
}

function fillBubble(el, i) {
  el.className = bubbleClass(i);
  el.querySelector(".who").textContent = i.speaker;
  el.querySelector(".text").textContent = i.text;
  return el;
}

function drawMeta(call) {
  const o = call.outcome;
  $("detail-meta").innerHTML = [
    `<span class="badge">${escape(new Date(call.created_at).toLocaleString())}</span>`,
    `<span class="badge">${names(call)}</span>`,
    call.channel === "phone" ? `<span class="badge" title="a phone call">phone${call.caller ? ` · ${escape(call.caller)}` : ""}</span>` : "",
    `<span class="badge">${duration(call.duration_seconds)}</span>`,
    `<span class="badge">cost $${(call.cost_usd || 0).toFixed(4)}</span>`,
    `<span class="badge" title="${escape(call.end_reason || call.status)}">${escape(call.end_reason_text || call.status)}</span>`,
    call.outcome_text
      ? `<span class="badge good">${escape(call.outcome_text)}` +
        (o && typeof o.monthly_savings === "number" ? `, saves ${money(o.monthly_savings)}/month` : "") + "</span>"
      : "",
  ].join(" ");
  $("dl-audio").hidden = !call.has_audio;
}

// New lines go in where the record has them; lines already drawn are only touched when their
// text or status changed, so what the user is reading stays put. At the bottom, it follows.
function drawTranscript(call) {
  const box = $("detail-transcript");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  const items = said(call);
  if (!items.length) {
    if (!shown.bubbles.size) box.innerHTML = '<p class="empty">Nothing was said in this call.</p>';
    return;
  }
  box.querySelector(":scope > p.empty")?.remove();
  let previous = null;
  items.forEach((i, n) => {
    const key = i.item_id || `#${n}`;
    let el = shown.bubbles.get(key);
    if (el) {
      if (el.querySelector(".text").textContent !== i.text || el.className !== bubbleClass(i)) fillBubble(el, i);
    } else {
      el = newBubble(i);
      shown.bubbles.set(key, el);
      if (previous) previous.after(el);
      else box.prepend(el);
    }
    previous = el;
  });
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function notice(text) {
  $("detail-notice").textContent = text || "";
  $("detail-notice").hidden = !text;
}

async function showCall(id) {
  for (const row of document.querySelectorAll("tr[data-call]")) row.classList.toggle("selected", row.dataset.call === id);
  clearTimeout(shown.timer);
  const token = ++shown.token;
  Object.assign(shown, { id, bubbles: new Map(), delay: FOLLOW_MS });
  $("detail-live").hidden = true;
  notice("");
  const r = await fetch(`/api/calls/${encodeURIComponent(id)}`);
  if (!r.ok || token !== shown.token) return;
  const call = await r.json();
  if (token !== shown.token) return;
  $("detail-empty").hidden = true;
  $("detail-body").hidden = false;
  const base = `/api/calls/${encodeURIComponent(id)}`;
  $("dl-md").href = `${base}/transcript?format=md`;
  $("dl-md").download = `${id}.md`;
  $("dl-json").href = `${base}/transcript?format=json`;
  $("dl-json").download = `${id}.json`;
  $("dl-audio").href = `${base}/audio`;
  $("detail-transcript").innerHTML = "";
  drawMeta(call);
  drawTranscript(call);
  follow(call, token);
}

// An active call is read again every FOLLOW_MS (from the database, so any server process
// answers); a failed read is said quietly and retried later and later, up to BACKOFF_MAX_MS.
function follow(call, token) {
  const live = call.status === "active";
  $("detail-live").hidden = !live;
  if (!live) return;
  shown.timer = setTimeout(async () => {
    if (token !== shown.token) return;
    if (document.hidden) return follow(call, token); // nobody is looking: wait, do not read
    let fresh;
    try {
      const r = await fetch(`/api/calls/${encodeURIComponent(call.id)}`);
      if (!r.ok) throw new Error(`the server answered ${r.status}`);
      fresh = await r.json();
    } catch (err) {
      if (token !== shown.token) return;
      shown.delay = Math.min(shown.delay * 2, BACKOFF_MAX_MS);
      notice(`Live updates paused (${err.message}); trying again in ${Math.round(shown.delay / 1000)} s.`);
      return follow(call, token);
    }
    if (token !== shown.token) return;
    shown.delay = FOLLOW_MS;
    notice("");
    drawMeta(fresh);
    drawTranscript(fresh);
    updateRow(fresh);
    follow(fresh, token);
  }, shown.delay);
}

loadCalls();
