// The copilot: the microphone ("You") and the system audio ("Them") as two calls through the
// server, quick answers from the mic session, considered answers from the server.
import { microphonePicker } from "./devices.js";
import { RealtimeCall, captureSystemAudio, unsupportedReason } from "./parley.js";
import { $, escape, statusLabel } from "./ui.js";

const THEM = "[Them] ";

let mic = null;
let speaker = null;
const mains = []; // {id, after (them item id), at, text, label, thinking}
const injected = new Set();

function setStatus(el, call) {
  const status = call ? call.state.status : "disconnected";
  el.dataset.status = status;
  el.textContent = statusLabel(status);
}

/** Both calls' lines, in the order they were spoken, with the answers after what they answer. */
function timeline() {
  const rows = [];
  if (speaker) {
    for (const item of speaker.state.items) {
      if (item.role === "user" && (item.text || item.speaking)) rows.push({ kind: "them", id: item.id, at: item.at, text: item.text || "…" });
    }
  }
  if (mic) {
    for (const item of mic.state.items) {
      if (item.role === "user") {
        if ((item.text || "").startsWith(THEM.trim())) continue; // our own injection of their words
        if (item.text || item.speaking) rows.push({ kind: "you", id: item.id, at: item.at, text: item.text || "…" });
      } else if (item.role === "assistant" && item.text) {
        rows.push({ kind: "aux", id: item.id, at: item.at, text: item.text });
      }
    }
  }
  for (const m of mains) rows.push({ kind: "main", id: m.id, at: m.at, text: m.text, label: m.label, thinking: m.thinking });
  rows.sort((a, b) => a.at - b.at);
  // The quick answer first, then the considered one, both after the line they answer.
  for (let i = 0; i + 1 < rows.length; i++) {
    if (rows[i].kind === "main" && rows[i + 1].kind === "aux") [rows[i], rows[i + 1]] = [rows[i + 1], rows[i]];
  }
  return rows;
}

function render() {
  setStatus($("mic-status"), mic);
  setStatus($("speaker-status"), speaker);
  const live = Boolean(mic || speaker);
  $("start").disabled = live;
  $("stop").disabled = !live;
  for (const [button, call] of [[$("mic-mute"), mic], [$("speaker-mute"), speaker]]) {
    button.disabled = !call || call.state.status !== "connected";
    const muted = Boolean(call && call.state.muted);
    button.setAttribute("aria-pressed", String(muted));
    button.textContent = muted ? "Unmute" : "Mute";
  }
  const errors = [mic, speaker].filter(Boolean).flatMap((c) => c.state.errors);
  $("errors").textContent = errors.length ? errors[errors.length - 1].message : "";
  const rows = timeline();
  const box = $("timeline");
  if (!rows.length) {
    if (live) box.innerHTML = '<p class="empty">Listening… what they say appears as <strong>Them</strong>, what you say as <strong>You</strong>.</p>';
    return;
  }
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
  box.innerHTML = rows.map((r) => {
    const who = { them: "Them", you: "You", aux: "Quick answer", main: `Main answer${r.label ? ` · ${r.label}` : ""}` }[r.kind];
    return `<div class="bubble ${r.kind}${r.thinking ? " thinking" : ""}" data-kind="${r.kind}" data-item="${escape(r.id)}">` +
      `<span class="who">${escape(who)}</span><span class="text">${escape(r.text)}</span></div>`;
  }).join("");
  if (nearBottom) box.scrollTop = box.scrollHeight;
}

// Each line of theirs, once its words are final, goes into the mic session (labelled), and gets a
// quick answer there and a considered one from the server.
function onSpeakerChanges(changes) {
  for (const c of changes) {
    if (c.kind !== "item_completed" || c.item.role !== "user" || !c.first) continue;
    const id = c.item.id;
    if (!c.text || injected.has(id) || !mic || mic.state.status !== "connected") continue;
    injected.add(id);
    mic.sendClientEvent({
      type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text: THEM + c.text }] },
    });
    if (mic.activeResponseId) mic.sendClientEvent({ type: "response.cancel" });
    mic.sendClientEvent({ type: "response.create" });
    mainAnswer(id, c.text);
  }
}

async function mainAnswer(afterId, question) {
  const them = speaker && speaker.state.items.find((i) => i.id === afterId);
  const entry = { id: `main-${afterId}`, after: afterId, at: (them ? them.at : Date.now()) + 2, text: "", label: "", thinking: true };
  mains.push(entry);
  render();
  try {
    const r = await fetch("/api/copilot/answer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ mic_call_id: mic.state.callId, speaker_call_id: speaker.state.callId, question }),
    });
    if (!r.ok || !r.body) throw new Error(`the server answered ${r.status}`);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const blocks = buffer.split("\n\n");
      buffer = blocks.pop();
      for (const block of blocks) {
        const line = block.split("\n").find((l) => l.startsWith("data:"));
        if (!line) continue;
        const data = JSON.parse(line.slice(5));
        if (data.label) entry.label = data.label;
        if (data.delta) entry.text += data.delta;
        if (data.error) entry.text = `(no main answer: ${data.error})`;
        if (data.done) entry.thinking = false;
        render();
      }
    }
  } catch (err) {
    entry.text = `(no main answer: ${err.message})`;
  }
  entry.thinking = false;
  render();
}

function watch(call, meter) {
  call.addEventListener("change", render);
  // `mic` is each call's own input: the microphone, or the shared system audio.
  call.addEventListener("levels", (e) => ($(meter).value = Math.min(1, e.detail.mic * 4)));
}

async function start() {
  const problem = unsupportedReason();
  if (problem) {
    $("errors").textContent = problem.message;
    return;
  }
  mains.length = 0;
  injected.clear();
  // Both calls must belong to the same visitor: make sure the identity cookie exists first.
  await fetch("/api/me", { credentials: "same-origin" }).catch(() => {});
  mic = new RealtimeCall({ persona: "copilot/mic", deviceId: $("mic-device").value || null, reconnectAttempts: 3 });
  // The other side's voice is not echo: no echo cancellation or gain games on the system audio.
  speaker = new RealtimeCall({
    persona: "copilot/speaker",
    reconnectAttempts: 3,
    openStream: () => captureSystemAudio(),
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  window.copilot = { mic, speaker, mains };
  watch(mic, "mic-level");
  watch(speaker, "speaker-level");
  speaker.addEventListener("changes", (e) => onSpeakerChanges(e.detail));
  render();
  // The microphone's names come with its permission, while the share picker may still be open.
  const micReady = mic.connect().then(fillDevices);
  const results = await Promise.allSettled([micReady, speaker.connect()]);
  if (results.some((r) => r.status === "rejected")) render();
}

function stop() {
  for (const call of [mic, speaker]) {
    if (!call) continue;
    const id = call.state.callId;
    call.disconnect();
    if (id) fetch(`/api/calls/${encodeURIComponent(id)}/hangup`, { method: "POST" }).catch(() => {});
  }
  render();
  $("mic-level").value = $("speaker-level").value = 0; // no levels arrive after the calls
  mic = speaker = null;
  $("start").disabled = false;
  $("stop").disabled = true;
}

const fillDevices = microphonePicker($("mic-device"), $("mic-warning"));
$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
$("mic-mute").addEventListener("click", () => mic && mic.setMuted(!mic.state.muted));
$("speaker-mute").addEventListener("click", () => speaker && speaker.setMuted(!speaker.state.muted));
$("mic-device").addEventListener("change", async () => {
  if (mic) await mic.setMicrophone($("mic-device").value);
  await fillDevices();
});

fetch("/api/copilot")
  .then((r) => (r.ok ? r.json() : null))
  .then((info) => {
    if (info && info.answerer) $("answerer").textContent = `Main answers: ${info.answerer}`;
  })
  .catch(() => {});
