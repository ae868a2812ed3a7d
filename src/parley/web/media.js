// media.js: what a call does with audio in the browser, apart from the protocol: opening and
// explaining microphone problems, system audio, levels, the mouth-to-ear latency meter, and the
// recording of both sides.

export class CallError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/**
 * The system audio (what the other party in a meeting says), through the screen-share picker.
 * Chrome shares audio only with a tab or screen and "Share audio" ticked; the video is dropped.
 */
export async function captureSystemAudio() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
    throw new CallError("no_display_capture", "This browser cannot capture system audio (no getDisplayMedia).");
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ audio: true, video: true });
  } catch (err) {
    throw new CallError("permission_denied", "Sharing was cancelled or denied: the other side's audio is not captured.");
  }
  stream.getVideoTracks().forEach((t) => t.stop());
  const audio = stream.getAudioTracks();
  if (!audio.length) {
    throw new CallError("no_system_audio", 'No audio was shared: share a tab or the whole screen and tick "Share audio".');
  }
  return new MediaStream(audio);
}

/** Why this browser cannot make a call, or null when it can. */
export function unsupportedReason() {
  const local = ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
  if (!window.isSecureContext && !local) {
    return new CallError("insecure_origin",
      "The microphone only works on a secure page: open this app over https (or on localhost).");
  }
  if (!window.RTCPeerConnection) {
    return new CallError("no_webrtc", "This browser cannot make WebRTC calls. Try a current Chrome, Edge, Firefox or Safari.");
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return new CallError("no_microphone_api", "This browser gives no access to a microphone.");
  }
  return null;
}

export function microphoneError(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return new CallError("permission_denied",
      "Microphone access was denied. Allow the microphone for this site (the icon in the address bar) and try again.");
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return new CallError("no_microphone", "No microphone was found. Plug one in or pick another input device.");
  }
  if (name === "NotReadableError") {
    return new CallError("microphone_busy", "The microphone is in use by another application or could not be opened.");
  }
  return new CallError("microphone_error", `Could not open the microphone: ${err && err.message ? err.message : err}`);
}

/** RMS level (0..1) of an AnalyserNode, for meters and the latency detector. */
export function level(analyser, buffer) {
  analyser.getFloatTimeDomainData(buffer);
  let sum = 0;
  for (let i = 0; i < buffer.length; i++) sum += buffer[i] * buffer[i];
  return Math.sqrt(sum / buffer.length);
}

/**
 * The mouth-to-ear latency meter: the time from the end of the user's speech (a local level
 * detector on the microphone) to the first audible agent audio (the same on the agent's track).
 */
export class LatencyMeter {
  constructor({ speechLevel = 0.02, hangoverMs = 250 } = {}) {
    this.speechLevel = speechLevel;
    this.hangoverMs = hangoverMs;
    this.userSpeaking = false;
    this.lastVoice = 0;
    this.speechEnd = null;
    this.agentAudible = false;
  }

  // Called every tick with both levels; returns a latency in ms when a turn completes.
  update(now, mic, agent) {
    let result = null;
    const agentNow = agent > this.speechLevel;
    if (mic > this.speechLevel && !agentNow) {
      this.userSpeaking = true;
      this.lastVoice = now;
      this.speechEnd = null;
    } else if (this.userSpeaking && now - this.lastVoice > this.hangoverMs) {
      this.userSpeaking = false;
      this.speechEnd = this.lastVoice;
    }
    if (agentNow && !this.agentAudible && this.speechEnd !== null) {
      result = Math.round(now - this.speechEnd);
      this.speechEnd = null;
    }
    this.agentAudible = agentNow;
    return result;
  }
}

/** Both sides of a call (the microphone and the agent, mixed) in a MediaRecorder, for the server. */
export class CallRecording {
  constructor(context) {
    this.context = context;
    this.mix = context.createMediaStreamDestination();
    this.sources = {};
    const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4"].find((t) => MediaRecorder.isTypeSupported(t));
    const chunks = [];
    this.recorder = new MediaRecorder(this.mix.stream, type ? { mimeType: type } : undefined);
    this.recorder.ondataavailable = (e) => e.data.size && chunks.push(e.data);
    this.blob = new Promise((resolve) => {
      this.recorder.onstop = () => resolve(chunks.length ? new Blob(chunks, { type: this.recorder.mimeType.split(";")[0] }) : null);
    });
    this.recorder.start(1000);
  }

  /** Mix in `source` as side `which` ("mic" or "agent"), replacing that side's earlier source. */
  add(source, which) {
    if (this.sources[which]) this.sources[which].disconnect(this.mix);
    source.connect(this.mix);
    this.sources[which] = source;
  }

  /** The recording (a Blob, or null when nothing was recorded); the audio context closes after it. */
  stop() {
    const done = this.blob.then((blob) => {
      this.context.close();
      return blob;
    });
    if (this.recorder.state !== "inactive") this.recorder.stop();
    return done;
  }
}
