// The bill-negotiation practice call: the page around parley.js.
import { microphonePicker } from "./devices.js";
import { RealtimeCall, unsupportedReason } from "./parley.js";
import { $, escape, money, statusLabel } from "./ui.js";

const SCENARIO_PERSONA = "negotiator/sarah";
const svg = (body) => `<svg width="30" height="30" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" ` +
  `stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">${body}</svg>`;
const MIC = '<rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0M12 18v3"/>';
const ICONS = {
  mic: svg(MIC),
  muted: svg(`${MIC}<path d="M3 3l18 18"/>`),
  talk: svg(`${MIC}<path d="M1 8v6M23 8v6"/>`),
};

let personas = [];
let card = null;
let call = null;
let outcome = null;
const logLines = [];

// Who speaks for the provider, as the server records it on the call (the supervisor button and the
// agent's own transfer tool both hand over on the server). The session's instructions changing
// means a hand-over may have happened: a new stretch of the call begins, and the page asks the
// server who speaks in it. An answer keeps the name of the stretch it was written in.
const stretches = []; // [{persona}], the last is now
const stretchOf = new Map(); // assistant item id -> index in stretches
let instructions; // the session's, as last reported
let recorded = 0; // how many personas the server had recorded on the call when last asked
let handingTo = null; // the persona an escalation (POST) named before its stretch began

async function loadScenario() {
  try {
    personas = await (await fetch("/api/personas")).json();
  } catch {
    personas = [];
  }
  card = personas.find((p) => p.persona && p.persona.id === SCENARIO_PERSONA) || personas[0] || null;
  if (!card) return;
  $("bill").textContent = `${money(card.monthly_bill)} / month`;
  $("provider").textContent = card.provider;
  $("plan").textContent = card.plan;
  $("years").textContent = `${card.years_customer} years`;
  $("competitor").textContent = card.competitor ? `${card.competitor.name}: ${money(card.competitor.price)}/month` : "—";
  $("goal").textContent = card.description || $("goal").textContent;
  try {
    const health = await (await fetch("/healthz")).json();
    const upstream = health.upstream && (health.upstream.kind || health.upstream);
    $("upstream").textContent = upstream ? `Agent: ${upstream === "local" ? "local engine (offline)" : upstream}` : "";
  } catch {
    /* optional */
  }
}

function currentPersona() {
  return stretches.length ? stretches[stretches.length - 1].persona : card && card.persona;
}

function personaOf(recordedPersona) {
  return (card && (card.personas || []).find((p) => p.id === recordedPersona.id)) || recordedPersona;
}

function nameOf(item) {
  const stretch = stretches[stretchOf.has(item.id) ? stretchOf.get(item.id) : stretches.length - 1];
  const persona = stretch ? stretch.persona : currentPersona();
  return persona ? persona.name : "Agent";
}

function onChanges(changes) {
  for (const c of changes) {
    if (c.kind === "session_changed" && c.session.instructions !== instructions) {
      instructions = c.session.instructions;
      const stretch = { persona: handingTo || currentPersona() };
      handingTo = null;
      stretches.push(stretch);
      // A direct call reaches the server only through the page's reports: it is not asked.
      if (call.options.mode === "server") learnPersona(call, stretch);
    } else if (c.kind === "item_placed" && c.item.role === "assistant" && !stretchOf.has(c.item.id)) {
      stretchOf.set(c.item.id, stretches.length - 1);
    }
  }
}

/** Ask the server who speaks in `stretch`: until it has recorded a new persona, for a few seconds
 * (its copy of the session change may reach it a moment after the page's). */
async function learnPersona(of, stretch) {
  const first = stretch === stretches[0];
  for (const wait of [0, 250, 500, 1000, 2000]) {
    if (wait) await new Promise((resolve) => setTimeout(resolve, wait));
    if (call !== of || !of.state.callId) return;
    let detail;
    try {
      const r = await fetch(`/api/calls/${encodeURIComponent(of.state.callId)}`);
      if (!r.ok) continue;
      detail = await r.json();
    } catch {
      continue; // asked again after the next wait
    }
    const list = detail.personas || [];
    if (list.length && (first || list.length > recorded)) {
      recorded = list.length;
      stretch.persona = personaOf(list[list.length - 1]);
      render();
      return;
    }
  }
}

function log(event, direction = "in") {
  const detail = event.type === "error" ? ` ${(event.error && event.error.message) || ""}` : event.delta ? ` ${JSON.stringify(event.delta).slice(0, 60)}` : "";
  logLines.push(`${new Date().toLocaleTimeString()} ${direction === "in" ? "←" : "→"} ${event.type}${detail}`);
  if (logLines.length > 400) logLines.splice(0, logLines.length - 400);
  if ($("log").closest("details").open) $("log").textContent = logLines.join("\n");
}

function render() {
  const state = call ? call.state : null;
  const status = state ? state.status : "disconnected";
  const live = status === "connected";
  const el = $("status");
  el.dataset.status = status;
  el.textContent = statusLabel(status);
  $("start").disabled = status === "connecting" || live;
  $("end").disabled = !state || status === "disconnected";
  $("mic").disabled = !live;
  $("text").disabled = $("send").disabled = !live;
  const persona = currentPersona();
  $("supervisor").disabled = !live || $("direct").checked || Boolean(handingTo) || (persona && card && persona.id !== SCENARIO_PERSONA);
  if (!live) {
    $("mic-level").value = $("agent-level").value = 0; // no levels arrive after the call
  }
  if (!state) {
    $("mic").innerHTML = ICONS.mic;
    return;
  }

  const muted = state.muted;
  $("mic").setAttribute("aria-pressed", String(state.pushToTalk ? false : muted));
  $("mic").setAttribute("aria-label", state.pushToTalk ? "Hold to talk" : muted ? "Unmute microphone" : "Mute microphone");
  $("mic").innerHTML = state.pushToTalk ? ICONS.talk : muted ? ICONS.muted : ICONS.mic;
  $("mic").classList.toggle("talking", state.pushToTalk && state.userSpeaking);
  const name = persona ? persona.name : "Agent";
  $("speaking").dataset.on = String(state.agentSpeaking);
  $("speaking").textContent = state.agentSpeaking ? `${name} is speaking` : `${name} is listening`;
  $("errors").textContent = state.errors.length ? state.errors[state.errors.length - 1].message : "";

  const items = state.items.filter((i) => !i.hidden && (i.text || i.role !== "tool"));
  const box = $("transcript");
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
  if (!items.length) {
    box.innerHTML = `<p class="empty">${live ? "Say hello — or wait for the greeting." : box.querySelector(".empty") ? box.querySelector(".empty").innerHTML : ""}</p>`;
  } else {
    box.innerHTML = items.map((item) => {
      if (item.role === "tool") {
        return item.name === "record_outcome" || item.name === "transfer_to_supervisor"
          ? `<div class="bubble tool">${item.name === "record_outcome" ? "✔ Outcome recorded" : "↪ Transferring to a supervisor"}</div>` : "";
      }
      const who = item.role === "user" ? "You" : nameOf(item);
      const text = item.text || (item.role === "user" && item.speaking ? "…" : "");
      const classes = ["bubble", item.role, item.status === "in_progress" ? "pending" : "", item.status === "interrupted" ? "interrupted" : ""];
      return `<div class="${classes.join(" ")}" data-item="${escape(item.id)}" data-status="${item.status}">` +
        `<span class="who">${escape(who)}</span><span class="text">${escape(text)}</span></div>`;
    }).join("");
    if (nearBottom) box.scrollTop = box.scrollHeight;
  }
  const lat = state.latencies;
  if (lat.length) {
    $("latency").textContent = `${lat[lat.length - 1]} ms`;
    $("latency-avg").textContent = lat.length > 1 ? `(median ${median(lat)} ms over ${lat.length} turns)` : "";
  }
  renderOutcome();
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function renderOutcome() {
  if (!outcome) return;
  const before = outcome.old_monthly_price ?? (card && card.monthly_bill);
  const after = outcome.new_monthly_price;
  $("outcome").hidden = false;
  $("outcome-price").textContent = `${money(after)} / month`;
  const saving = typeof before === "number" && typeof after === "number" ? before - after : null;
  $("outcome-detail").textContent = [
    saving !== null ? `You save ${money(saving)} a month (${money(saving * 12)} a year) off ${money(before)}.` : "",
    outcome.term_months ? `For ${outcome.term_months} months.` : "",
    outcome.accepted_by ? `Agreed with ${outcome.accepted_by}.` : "",
  ].filter(Boolean).join(" ");
}

function outcomeFromItems() {
  for (const item of call.state.items) {
    if (item.kind === "function_call" && item.name === "record_outcome") {
      try {
        outcome = JSON.parse(item.text);
      } catch {
        /* arguments still streaming */
      }
    }
  }
}

async function start() {
  const problem = unsupportedReason();
  if (problem) {
    $("errors").textContent = problem.message;
    return;
  }
  outcome = null;
  $("outcome").hidden = true;
  stretches.length = 0;
  stretchOf.clear();
  instructions = undefined;
  recorded = 0;
  handingTo = null;
  call = new RealtimeCall({
    persona: SCENARIO_PERSONA,
    mode: $("direct").checked ? "direct" : "server",
    pushToTalk: $("ptt").checked,
    greet: true,
    record: true,
    deviceId: $("device").value || null,
    volume: Number($("volume").value),
    audio: headsetAudio($("headset").checked),
  });
  window.parleyCall = call; // for tests and the curious
  call.addEventListener("changes", (e) => onChanges(e.detail));
  call.addEventListener("change", () => {
    outcomeFromItems();
    render();
  });
  call.addEventListener("levels", (e) => {
    $("mic-level").value = Math.min(1, e.detail.mic * 4);
    $("agent-level").value = Math.min(1, e.detail.agent * 4);
  });
  call.addEventListener("event", (e) => log(e.detail));
  call.addEventListener("sent", (e) => log(e.detail, "out"));
  render();
  try {
    await call.connect();
    await fillDevices();
  } catch (err) {
    render();
  }
}

function headsetAudio(headset) {
  const on = !headset;
  return { echoCancellation: on, noiseSuppression: on, autoGainControl: on };
}

async function end() {
  if (!call) return;
  const { callId } = call.state;
  const direct = $("direct").checked;
  call.disconnect();
  render();
  if (!callId) return;
  upload(callId, call.recording);
  if (direct) return;
  try {
    await fetch(`/api/calls/${encodeURIComponent(callId)}/hangup`, { method: "POST" });
    const detail = await (await fetch(`/api/calls/${encodeURIComponent(callId)}`)).json();
    if (detail.outcome && detail.outcome.new_monthly_price !== undefined) outcome = detail.outcome;
  } catch {
    /* the page already shows what it saw */
  }
  renderOutcome();
}

/** Keep the call's recording on the server, for the history page. */
async function upload(callId, recording) {
  const blob = await recording;
  if (!blob) return;
  await fetch(`/api/calls/${encodeURIComponent(callId)}/audio`, {
    method: "POST",
    body: blob,
    headers: { "Content-Type": blob.type || "audio/webm" },
  }).catch(() => {});
}

async function escalate() {
  if (!call || !call.state.callId) return;
  $("supervisor").disabled = true;
  const before = stretches.length;
  const r = await fetch(`/api/calls/${encodeURIComponent(call.state.callId)}/escalate`, { method: "POST" });
  if (r.ok) {
    // The server says who takes over: the stretch the hand-over began (or, not begun yet, the next).
    const persona = personaOf((await r.json()).persona);
    if (stretches.length > before) stretches[before].persona = persona;
    else handingTo = persona;
  } else {
    const body = await r.json().catch(() => ({}));
    $("errors").textContent = (body.error && body.error.message) || `Escalation failed (${r.status}).`;
  }
  render();
}

// -- controls ---------------------------------------------------------------------------------

const fillDevices = microphonePicker($("device"), $("device-warning"));
$("start").addEventListener("click", start);
$("end").addEventListener("click", end);
$("supervisor").addEventListener("click", escalate);
$("text-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (call && call.sendText($("text").value)) $("text").value = "";
});
$("mic").addEventListener("click", () => {
  if (call && !call.state.pushToTalk) call.setMuted(!call.state.muted);
});
for (const [type, down] of [["pointerdown", true], ["pointerup", false], ["pointerleave", false]]) {
  $("mic").addEventListener(type, () => {
    if (!call || !call.state.pushToTalk) return;
    if (down) call.startTalking();
    else call.stopTalking();
  });
}
document.addEventListener("keydown", (e) => {
  if (!call || e.target.tagName === "INPUT" || e.repeat) return;
  if (e.code === "Space" && call.state.pushToTalk) {
    e.preventDefault();
    call.startTalking();
  } else if (e.key === "m" || e.key === "M") {
    call.setMuted(!call.state.muted);
  }
});
document.addEventListener("keyup", (e) => {
  if (call && e.code === "Space" && call.state.pushToTalk && e.target.tagName !== "INPUT") call.stopTalking();
});
$("ptt").addEventListener("change", () => call && call.setPushToTalk($("ptt").checked));
$("headset").addEventListener("change", () => call && call.setAudioProcessing(!$("headset").checked));
$("volume").addEventListener("input", () => call && call.setVolume($("volume").value));
$("device").addEventListener("change", async () => {
  if (call) await call.setMicrophone($("device").value);
  await fillDevices();
});
$("log").closest("details").addEventListener("toggle", () => ($("log").textContent = logLines.join("\n")));

loadScenario().then(render);
