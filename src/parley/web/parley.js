// parley.js: a small browser client for realtime voice calls (OpenAI Realtime protocol over WebRTC).
// Plain ES module, no build step, no framework. Two ways to connect:
//   mode "server" (default): the browser's SDP offer goes to the Parley server (POST /api/calls),
//     which holds the agent's configuration and the real key, and records the call;
//   mode "direct": the server mints an ephemeral key (POST /api/session) and the browser posts its
//     offer straight to the upstream's /v1/realtime/calls (the flow of OpenAI's browser examples).
//
// The call is a thin driver around `ConversationState` (conversation.js, the browser's copy of
// parley.protocol's): every data-channel event goes through it, and the changes it reports update
// `call.state`. Events a page can listen to:
//   "change"   the state changed (detail: call.state)
//   "changes"  what one server event changed, in the protocol's own kinds (detail: a list of
//              {kind: "item_completed", item, text, first, ...}; see conversation.js)
//   "event"    one server event, in GA shape; "sent" one client event; "error", "levels", "latency"
//
//   import { RealtimeCall } from "./parley.js";
//   const call = new RealtimeCall({ persona: "negotiator/sarah" });
//   call.addEventListener("change", () => render(call.state));
//   await call.connect();

import { ConversationState } from "./conversation.js";
import { listMicrophones } from "./devices.js";
import { CallError, CallRecording, LatencyMeter, level, microphoneError, unsupportedReason } from "./media.js";
import { InvalidServerEvent, readServerEvent } from "./protocol.js";

export { listMicrophones, watchMicrophones } from "./devices.js";
export { CallError, captureSystemAudio, unsupportedReason } from "./media.js";

// Errors the protocol calls harmless, which our own events earn in a race (a cancel sent as the
// response ended by itself): counted in state.ignoredErrors and in the event log, never shown.
const HARMLESS_ERRORS = new Set(["response_cancel_not_active"]);

export class RealtimeCall extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = {
      mode: "server",
      persona: null,
      apiBase: "",
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      deviceId: null,
      pushToTalk: false,
      greet: false,
      record: false, // keep a recording of both sides (microphone and agent), see `recording`

      volume: 1,
      // STUN/TURN servers for the peer connection; none by default (the browser's own default too),
      // so a call on loopback or a LAN asks nobody outside.
      iceServers: [],
      reconnectAttempts: 2,
      meterIntervalMs: 50,
      ...options,
    };
    this.state = this._initialState();
    this.pc = null;
    this.dc = null;
    this.stream = null;
    this.audioElement = options.audioElement || null;
    this._closing = false;
    this._retries = 0;
    this._talking = false;
    this.conversation = new ConversationState(); // the server's conversation, as its events say
    this._views = new Map(); // item id -> its view (null: not shown), made again when it changes
    this._earlier = []; // item views of the connections before this one (a reconnected call)
    this._speech = null; // the user's turn in progress: {id, speaking}
    this._seen = new Map(); // item id -> when the page first knew of it (a turn: when speech started)
  }

  _initialState() {
    return {
      status: "disconnected", // disconnected | connecting | connected | reconnecting
      callId: null,
      agentSpeaking: false,
      userSpeaking: false,
      muted: false,
      pushToTalk: this.options ? this.options.pushToTalk : false,
      items: [], // transcript in conversation (speech) order
      errors: [],
      ignoredErrors: 0, // harmless protocol errors (HARMLESS_ERRORS), not shown to the user
      invalidEvents: 0, // server events that could not be read (logged to the console)
      latencies: [], // mouth-to-ear ms per turn
      levels: { mic: 0, agent: 0 },
      usage: { responses: 0, inputTokens: 0, outputTokens: 0 },
      session: null,
    };
  }

  // -- connecting --------------------------------------------------------------------------

  async connect() {
    const unsupported = unsupportedReason();
    if (unsupported) throw this._fail(unsupported);
    this._closing = false;
    this._set({ status: this.state.status === "reconnecting" ? "reconnecting" : "connecting", errors: [] });
    try {
      this.stream = await this._openMicrophone();
    } catch (err) {
      throw this._fail(err instanceof CallError ? err : microphoneError(err));
    }
    try {
      await this._startPeer();
    } catch (err) {
      this._teardown();
      throw this._fail(err instanceof CallError ? err : new CallError("connect_failed", String(err.message || err)));
    }
    return this;
  }

  async _openMicrophone() {
    const audio = { ...this.options.audio };
    if (this.options.deviceId) audio.deviceId = { exact: this.options.deviceId };
    // `openStream` lets a page send another source than the microphone (the copilot's system audio).
    if (this.options.openStream) return this.options.openStream(audio);
    return navigator.mediaDevices.getUserMedia({ audio });
  }

  async _startPeer() {
    const pc = new RTCPeerConnection({ iceServers: this.options.iceServers });
    this.pc = pc;
    this._newConversation();
    if (!this.audioElement) {
      this.audioElement = document.createElement("audio");
      this.audioElement.autoplay = true;
      this.audioElement.style.display = "none";
      document.body.appendChild(this.audioElement);
    }
    this.audioElement.volume = this.options.volume;
    pc.ontrack = (e) => {
      // Played through the WebRTC track, so the browser's echo canceller hears it too.
      this.audioElement.srcObject = e.streams[0] || new MediaStream([e.track]);
      this._meter("agent", this.audioElement.srcObject);
    };
    for (const track of this.stream.getTracks()) pc.addTrack(track, this.stream);
    this._meter("mic", this.stream);
    this._applyMute();
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === "failed") this._lost("The connection failed (ICE).");
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") this._lost("The connection failed.");
    };
    const dc = pc.createDataChannel("oai-events");
    this.dc = dc;
    dc.onopen = () => {
      this._retries = 0;
      this._set({ status: "connected" });
      if (this.state.pushToTalk) this._sendTurnDetection(null);
      // The agent speaks first (a phone call: the one who picks up says hello).
      if (this.options.greet) this.sendClientEvent({ type: "response.create" });
    };
    dc.onclose = () => {
      if (!this._closing) this._lost("The call's event channel closed.");
    };
    dc.onmessage = (e) => this._receive(e.data);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const { sdp, callId } = this.options.mode === "direct" ? await this._directOffer(offer.sdp) : await this._serverOffer(offer.sdp);
    this._set({ callId });
    await pc.setRemoteDescription({ type: "answer", sdp });
  }

  async _serverOffer(offerSdp) {
    const params = new URLSearchParams();
    if (this.options.persona) params.set("persona", this.options.persona);
    const r = await fetch(`${this.options.apiBase}/api/calls?${params}`, {
      method: "POST",
      body: offerSdp,
      headers: { "Content-Type": "application/sdp" },
      credentials: "same-origin",
    });
    return this._readAnswer(r, "the Parley server");
  }

  async _directOffer(offerSdp) {
    const r = await fetch(`${this.options.apiBase}/api/session`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ persona: this.options.persona }),
      credentials: "same-origin",
    });
    if (!r.ok) throw await this._httpError(r, "the Parley server");
    const session = await r.json();
    this.ephemeralKey = session.value;
    this._report = session.events_url ? { url: new URL(session.events_url, location.href).href, events: [] } : null;
    this._serverCallId = session.call_id || null;
    const callsUrl = new URL(session.calls_url, location.href).href;
    const answer = await fetch(callsUrl, {
      method: "POST",
      body: offerSdp,
      headers: { Authorization: `Bearer ${session.value}`, "Content-Type": "application/sdp" },
    });
    const read = await this._readAnswer(answer, "the realtime service");
    if (this._report) {
      // The server did not see this call: report its events so it is recorded too.
      this._report.upstreamCallId = read.callId;
      this._reportTimer = setInterval(() => this._flushReport(), 1000);
    }
    return { sdp: read.sdp, callId: this._serverCallId || read.callId };
  }

  async _flushReport() {
    const report = this._report;
    if (!report || !report.events.length) return;
    const events = report.events.splice(0, 500);
    try {
      await fetch(report.url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        credentials: "same-origin",
        keepalive: true,
        body: JSON.stringify({ events, upstream_call_id: report.upstreamCallId || null }),
      });
    } catch {
      report.events.unshift(...events); // try again with the next batch
    }
  }

  async _readAnswer(r, who) {
    if (!r.ok) throw await this._httpError(r, who);
    const type = r.headers.get("Content-Type") || "";
    if (type.includes("application/json")) {
      const body = await r.json();
      return { sdp: body.sdp, callId: body.call_id || body.id || null };
    }
    const location = r.headers.get("Location") || "";
    const callId = r.headers.get("X-Parley-Call-Id") || location.split("/").pop() || null;
    return { sdp: await r.text(), callId };
  }

  async _httpError(r, who) {
    let message = `${who} answered ${r.status}`;
    try {
      const body = await r.json();
      const detail = body.error ? body.error.message || body.error : body.detail;
      if (detail) message = typeof detail === "string" ? detail : JSON.stringify(detail);
    } catch {
      /* not JSON */
    }
    const code = r.status === 429 ? "rate_limited" : r.status === 401 || r.status === 403 ? "unauthorized" : "http_error";
    const err = new CallError(code, message);
    err.status = r.status;
    err.retryAfter = Number(r.headers.get("Retry-After")) || null;
    return err;
  }

  _lost(reason) {
    if (this._closing || this.state.status === "reconnecting") return;
    this._stopRecording(); // a reconnected call starts a recording of its own
    this._teardown();
    this._endConversation(reason);
    if (this._retries < this.options.reconnectAttempts) {
      this._retries += 1;
      this._set({ status: "reconnecting" });
      this._error(new CallError("connection_lost", `${reason} Reconnecting (attempt ${this._retries})...`));
      setTimeout(() => this.connect().catch(() => {}), 500 * 2 ** (this._retries - 1));
    } else {
      this._fail(new CallError("connection_lost", `${reason} Please start the call again.`));
    }
  }

  _fail(err) {
    this._error(err);
    this._set({ status: "disconnected", agentSpeaking: false });
    return err;
  }

  _error(err) {
    this.state.errors = [...this.state.errors, { code: err.code || "error", message: err.message }].slice(-20);
    this.dispatchEvent(new CustomEvent("error", { detail: err }));
    this._changed();
  }

  disconnect() {
    this._closing = true;
    /** A Promise of the call's recording (a Blob, or null), when `record` was on. */
    this.recording = this._stopRecording();
    this._teardown();
    this._endConversation("hung up");
    this._set({ status: "disconnected", agentSpeaking: false, userSpeaking: false });
  }

  _teardown() {
    clearInterval(this._ticker);
    this._ticker = null;
    clearInterval(this._reportTimer);
    this._flushReport();
    if (this.dc) this.dc.close();
    if (this.pc) this.pc.close();
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this._audioContext) this._audioContext.close();
    this._audioContext = null;
    this._analysers = {};
    this.dc = this.pc = this.stream = null;
  }

  // -- sending -----------------------------------------------------------------------------

  sendClientEvent(event) {
    if (!this.dc || this.dc.readyState !== "open") {
      this._error(new CallError("not_connected", "The call is not connected."));
      return false;
    }
    this.dc.send(JSON.stringify(event));
    this.dispatchEvent(new CustomEvent("sent", { detail: event }));
    return true;
  }

  sendText(text) {
    const words = String(text || "").trim();
    if (!words) return false;
    if (this.state.agentSpeaking) this.interrupt();
    return this.sendClientEvent({
      type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text: words }] },
    }) && this.sendClientEvent({ type: "response.create" });
  }

  /** Stop the agent now (a manual barge-in). */
  interrupt() {
    if (this.activeResponseId) this.sendClientEvent({ type: "response.cancel" });
    this.sendClientEvent({ type: "output_audio_buffer.clear" });
  }

  setMuted(muted) {
    this._set({ muted: Boolean(muted) });
    this._applyMute();
  }

  _applyMute() {
    if (!this.stream) return;
    // With push-to-talk the microphone is live only while the button is held.
    const live = !this.state.muted && (!this.state.pushToTalk || this._talking);
    this.stream.getAudioTracks().forEach((t) => (t.enabled = live));
  }

  setPushToTalk(on) {
    this._set({ pushToTalk: Boolean(on) });
    this._applyMute();
    if (this.dc && this.dc.readyState === "open") {
      this._sendTurnDetection(on ? null : { type: "server_vad" });
    }
  }

  _sendTurnDetection(turnDetection) {
    this.sendClientEvent({
      type: "session.update",
      session: { type: "realtime", audio: { input: { turn_detection: turnDetection } } },
    });
  }

  /** Push-to-talk: start a manual turn (hold). */
  startTalking() {
    if (!this.state.pushToTalk) return;
    if (this.state.agentSpeaking) this.interrupt();
    this._talking = true;
    this.sendClientEvent({ type: "input_audio_buffer.clear" });
    this._applyMute();
    this._set({ userSpeaking: true });
  }

  /** Push-to-talk: end the turn (release): commit what was said and ask for an answer. */
  stopTalking() {
    if (!this.state.pushToTalk || !this._talking) return;
    this._talking = false;
    // The last 20-100 ms of speech are still on their way over RTP.
    setTimeout(() => {
      this._applyMute();
      this.sendClientEvent({ type: "input_audio_buffer.commit" });
      this.sendClientEvent({ type: "response.create" });
      this._set({ userSpeaking: false });
    }, 250);
  }

  setVolume(volume) {
    this.options.volume = Math.max(0, Math.min(1, Number(volume)));
    if (this.audioElement) this.audioElement.volume = this.options.volume;
  }

  /** Headsets need no echo cancellation; turning it off gives cleaner speech. */
  async setAudioProcessing(on) {
    this.options.audio = { echoCancellation: on, noiseSuppression: on, autoGainControl: on };
    if (this.pc) await this._replaceMicrophone();
  }

  async listMicrophones() {
    return listMicrophones();
  }

  async setMicrophone(deviceId) {
    this.options.deviceId = deviceId || null;
    if (this.pc) await this._replaceMicrophone();
  }

  async _replaceMicrophone() {
    let stream;
    try {
      stream = await this._openMicrophone();
    } catch (err) {
      this._error(microphoneError(err));
      return;
    }
    const track = stream.getAudioTracks()[0];
    const sender = this.pc.getSenders().find((s) => s.track && s.track.kind === "audio");
    if (sender) await sender.replaceTrack(track);
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = stream;
    this._meter("mic", stream);
    this._applyMute();
  }

  // -- levels and latency -------------------------------------------------------------------

  _meter(which, stream) {
    try {
      this._audioContext = this._audioContext || new AudioContext();
      this._analysers = this._analysers || {};
      const source = this._audioContext.createMediaStreamSource(stream);
      const analyser = this._audioContext.createAnalyser();
      analyser.fftSize = 1024;
      source.connect(analyser); // analysed only, never played: the <audio> element plays the agent
      if (this.options.record) this._record(source, which);
      this._analysers[which] = { analyser, buffer: new Float32Array(analyser.fftSize) };
    } catch {
      return; // no Web Audio: no meters, the call still works
    }
    if (!this._ticker) {
      this._latency = new LatencyMeter();
      this._ticker = setInterval(() => this._tick(), this.options.meterIntervalMs);
    }
  }

  _record(source, which) {
    if (!window.MediaRecorder) return;
    this._recorder = this._recorder || new CallRecording(this._audioContext);
    this._recorder.add(source, which);
  }

  _stopRecording() {
    const recorder = this._recorder;
    if (!recorder) return Promise.resolve(null);
    // The recording keeps the audio context until it has flushed, and closes it then.
    this._recorder = null;
    this._audioContext = null;
    return recorder.stop();
  }

  _tick() {
    if (this._audioContext && this._audioContext.state === "suspended") this._audioContext.resume();
    const a = this._analysers || {};
    const mic = a.mic && !this.state.muted ? level(a.mic.analyser, a.mic.buffer) : 0;
    const agent = a.agent ? level(a.agent.analyser, a.agent.buffer) : 0;
    this.state.levels = { mic, agent };
    const ms = this._latency.update(performance.now(), mic, agent);
    if (ms !== null && ms < 10000) {
      this.state.latencies = [...this.state.latencies, ms].slice(-50);
      this.dispatchEvent(new CustomEvent("latency", { detail: ms }));
    }
    this.dispatchEvent(new CustomEvent("levels", { detail: this.state.levels }));
  }

  // -- server events -> state ------------------------------------------------------------------

  /** The response the agent is writing now (null when none). */
  get activeResponseId() {
    return this.conversation.activeResponseId;
  }

  _receive(raw) {
    const now = Date.now();
    const event = readServerEvent(raw);
    if (this._report && !(event instanceof InvalidServerEvent) && event.type !== "response.output_audio.delta") {
      this._report.events.push(event);
    }
    const changes = this.conversation.apply(event, now);
    this._applyChanges(changes, now, event);
    if (!(event instanceof InvalidServerEvent)) {
      this.dispatchEvent(new CustomEvent("event", { detail: event }));
      if (event.type === "response.done") this.dispatchEvent(new CustomEvent("response", { detail: event.response }));
    }
    this._announce(changes);
  }

  _applyChanges(changes, now, event = null, { ended = false } = {}) {
    const s = this.state;
    for (const c of changes) {
      switch (c.kind) {
        case "session_changed":
          s.session = c.session;
          break;
        case "speech_started":
          s.userSpeaking = true;
          this._speech = { id: c.item_id, speaking: true };
          if (c.item_id && !this._seen.has(c.item_id)) this._seen.set(c.item_id, now);
          break;
        case "speech_stopped":
          s.userSpeaking = false;
          if (this._speech) this._speech.speaking = false;
          break;
        case "input_committed":
          if (this._speech && this._speech.id === c.item_id) this._speech = null;
          break;
        case "input_cleared":
          this._speech = null;
          break;
        case "playback_started":
          s.agentSpeaking = true;
          break;
        case "playback_stopped":
          s.agentSpeaking = false;
          break;
        case "response_done":
          if (c.usage) {
            s.usage = {
              responses: s.usage.responses + 1,
              inputTokens: s.usage.inputTokens + (c.usage.input_tokens || 0),
              outputTokens: s.usage.outputTokens + (c.usage.output_tokens || 0),
            };
          }
          break;
        case "error_received":
          if (HARMLESS_ERRORS.has(c.code)) s.ignoredErrors += 1;
          else this._error(new CallError(c.code || c.type || "error", c.message));
          break;
        case "invalid_event":
          // Not an event we can read (or one of a shape we do not know): counted and logged, the call goes on.
          s.invalidEvents += 1;
          console.warn(`parley: ignored a server event: ${c.reason}`);
          break;
        default:
          break;
      }
    }
    this._updateItems(changes, event, ended || changes.some((c) => c.kind === "input_cleared"));
  }

  _announce(changes) {
    if (changes.length) this.dispatchEvent(new CustomEvent("changes", { detail: changes }));
    this._changed();
  }

  // state.items, the transcript as the pages show it: the conversation's messages and tool calls,
  // in order, and the user's turn while they are still speaking (before the server has made it an
  // item). An item changes only by an event or a change that names it, so only those views are
  // made again, and the list only when one was (or the user's turn was dropped: `speechGone`).
  _updateItems(changes, event, speechGone) {
    const named = new Set();
    const own = event && (typeof event.item_id === "string" ? event.item_id : event.item && event.item.id);
    if (typeof own === "string") named.add(own);
    for (const c of changes) {
      if (c.item) named.add(c.item.id);
      if (c.item_id) named.add(c.item_id);
      if (c.output) for (const item of c.output) named.add(item.id);
      if (c.kind === "item_deleted") this._views.delete(c.item_id);
    }
    if (!named.size && !speechGone) return;
    for (const id of named) {
      const item = this.conversation.get(id);
      if (item && !item.out_of_band) this._views.set(id, this._itemView(item));
    }
    this.state.items = [...this._earlier, ...this._itemViews()];
  }

  _itemViews() {
    const views = [];
    for (const id of this.conversation.ids) {
      const view = this._views.get(id);
      if (view) views.push(view);
    }
    const speech = this._speech;
    if (speech && speech.id && !this.conversation.has(speech.id)) {
      views.push({ id: speech.id, role: "user", kind: "message", text: "", status: "in_progress",
        speaking: speech.speaking, at: this._seen.get(speech.id) });
    }
    return views;
  }

  _itemView(item) {
    let role = item.role;
    let kind = "message";
    let text;
    if (item.type === "function_call") {
      [role, kind, text] = ["tool", "function_call", item.arguments];
    } else if (item.type === "function_call_output") {
      [role, kind, text] = ["tool", "function_call_output", item.output || ""];
    } else if (item.type !== "message" || role === "system") {
      return null;
    } else {
      text = item.text; // all of a cut answer's words (marked interrupted); `heard`: those heard
      if (!text && item.transcription_failed) text = "(not understood)";
    }
    const cut = item.status === "incomplete" || item.truncated_ms !== null;
    const speech = this._speech;
    return {
      id: item.id,
      role,
      kind,
      name: item.name,
      text,
      status: !this.conversation.isComplete(item.id) ? "in_progress" : cut ? "interrupted" : "completed",
      hidden: kind === "function_call_output",
      speaking: Boolean(speech && speech.id === item.id && speech.speaking),
      responseId: item.response_id,
      previousId: item.previous_item_id,
      heardMs: item.truncated_ms,
      heard: item.truncated_ms !== null ? item.heard_text : null,
      at: this._seen.get(item.id) || item.created_at,
    };
  }

  // A new connection is a new conversation; what was said before stays in the transcript.
  _newConversation() {
    this._earlier = this.state.items; // (the last conversation has ended: no turn in progress among them)
    this.conversation = new ConversationState();
    this._views = new Map(); // item id -> its view (null: not shown), made again when it changes
    this._speech = null;
  }

  // The connection is gone: what the agent was writing ends here, interrupted.
  _endConversation(reason) {
    const changes = this.conversation.connectionLost(reason);
    this._speech = null;
    this.state.userSpeaking = false;
    this._applyChanges(changes, Date.now(), null, { ended: true });
    this._announce(changes);
  }

  _set(patch) {
    Object.assign(this.state, patch);
    this._changed();
  }

  _changed() {
    this.dispatchEvent(new CustomEvent("change", { detail: this.state }));
  }
}
