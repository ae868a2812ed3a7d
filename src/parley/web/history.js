// Past calls: list, transcript, downloads.
import { $, escape, money } from "./ui.js";

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
  body.innerHTML = calls.map((c) => `
    <tr data-call="${escape(c.id)}" tabindex="0" aria-label="Call of ${escape(new Date(c.created_at).toLocaleString())}">
      <td>${escape(new Date(c.created_at).toLocaleString())}</td>
      <td>${names(c)}${c.channel === "phone" ? ` <span class="badge" title="a phone call">phone ${escape(c.caller || "")}</span>` : ""}</td>
      <td class="wide num">${duration(c.duration_seconds)}</td>
      <td>${outcomeText(c)}</td>
      <td class="wide num">$${(c.cost_usd || 0).toFixed(4)}</td>
    </tr>`).join("");
  for (const row of body.querySelectorAll("tr[data-call]")) {
    const open = () => showCall(row.dataset.call);
    row.addEventListener("click", open);
    row.addEventListener("keydown", (e) => (e.key === "Enter" || e.key === " ") && (e.preventDefault(), open()));
  }
  const wanted = new URLSearchParams(location.search).get("call") || calls[0].id;
  showCall(wanted);
}

async function showCall(id) {
  for (const row of document.querySelectorAll("tr[data-call]")) row.classList.toggle("selected", row.dataset.call === id);
  const r = await fetch(`/api/calls/${encodeURIComponent(id)}`);
  if (!r.ok) return;
  const call = await r.json();
  $("detail-empty").hidden = true;
  $("detail-body").hidden = false;
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
  const base = `/api/calls/${encodeURIComponent(id)}`;
  $("dl-md").href = `${base}/transcript?format=md`;
  $("dl-md").download = `${id}.md`;
  $("dl-json").href = `${base}/transcript?format=json`;
  $("dl-json").download = `${id}.json`;
  $("dl-audio").hidden = !call.has_audio;
  $("dl-audio").href = `${base}/audio`;
  // What was said; tool calls and the notes the server gives the agent stay out.
  const items = (call.transcript || []).filter((i) => i.text && i.kind === "message" && (i.role === "user" || i.role === "assistant"));
  $("detail-transcript").innerHTML = items.length ? items.map((i) => `
    <div class="bubble ${i.role === "user" ? "user" : "assistant"}${i.status === "incomplete" || i.audio_end_ms !== null && i.audio_end_ms !== undefined ? " interrupted" : ""}">
      <span class="who">${escape(i.speaker)}</span><span class="text">${escape(i.text)}</span></div>`).join("")
    : '<p class="empty">Nothing was said in this call.</p>';
}

loadCalls();
