// protocol.js: reading one server event in the browser, as parley.protocol.server_events does in Python.
// `readServerEvent` never throws: it parses the JSON, maps beta names and shapes to GA, and answers
// an `InvalidServerEvent` (saying why) for anything that is not an event.
//
// SERVER_RENAMES, BETA_FORMATS and CHANGE_KINDS are parley.protocol's own tables (beta.SERVER_RENAMES,
// beta._FORMAT_FROM_BETA, changes.CHANGE_KINDS); tests/test_web_protocol.py keeps them equal.

/** Server event types renamed in GA (beta name -> GA name). */
export const SERVER_RENAMES = {
  "response.text.delta": "response.output_text.delta",
  "response.text.done": "response.output_text.done",
  "response.audio.delta": "response.output_audio.delta",
  "response.audio.done": "response.output_audio.done",
  "response.audio_transcript.delta": "response.output_audio_transcript.delta",
  "response.audio_transcript.done": "response.output_audio_transcript.done",
  "conversation.item.created": "conversation.item.added",
};

/** Beta audio format names in their GA shape. */
export const BETA_FORMATS = {
  "pcm16": { type: "audio/pcm", rate: 24000 },
  "g711_ulaw": { type: "audio/pcmu" },
  "g711_alaw": { type: "audio/pcma" },
};

/** The `kind` of every change ConversationState.apply reports, in parley.protocol.changes' order. */
export const CHANGE_KINDS = [
  "session_changed", "speech_started", "speech_stopped", "input_committed", "input_cleared", "item_placed",
  "item_completed", "transcript_delta", "item_truncated", "item_retrieved", "item_deleted", "response_started",
  "response_done", "audio_received", "playback_started", "playback_stopped", "error_received", "invalid_event",
];

export const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
export const str = (value) => (typeof value === "string" ? value : null);
const own = (table, key) => (Object.hasOwn(table, key) ? table[key] : undefined);
const copy = (value) => (value === undefined ? value : JSON.parse(JSON.stringify(value)));

// Marks an event readServerEvent made (a symbol: never sent, never serialised), so that it is read once.
const READ = Symbol("parley.readServerEvent");

/** Whether `event` came from readServerEvent (GA-shaped already, or an InvalidServerEvent). */
export const isRead = (event) => Boolean(event && event[READ]);

/** Something that is not a server event; `reason` says what was wrong with it. */
export class InvalidServerEvent {
  constructor(reason, data = {}) {
    this.type = "invalid";
    this.reason = reason;
    this.data = data;
    this[READ] = true;
  }
}

// Events whose type or payload may be in a beta shape: renamed types, and those carrying a
// session, an item or a response (beta content part names, flat sessions, `modalities`).
const MAYBE_BETA = new Set([
  ...Object.keys(SERVER_RENAMES),
  "transcription_session.created", "transcription_session.updated", "session.created", "session.updated",
  "conversation.item.added", "conversation.item.done", "conversation.item.retrieved",
  "response.output_item.added", "response.output_item.done", "response.created", "response.done",
]);

/** One server event (a JSON string or a parsed object) in GA shape, or an InvalidServerEvent. */
export function readServerEvent(raw) {
  if (isRead(raw)) return raw;
  const event = read(raw);
  event[READ] = true;
  return event;
}

function read(raw) {
  let data = raw;
  if (typeof raw === "string") {
    try {
      data = JSON.parse(raw);
    } catch (err) {
      return new InvalidServerEvent(err instanceof RangeError ? "nested too deeply" : `not JSON: ${err.message}`);
    }
  }
  if (!isObject(data)) return new InvalidServerEvent("not a JSON object");
  if (typeof data.type !== "string") return new InvalidServerEvent("no string 'type'", data);
  if (!MAYBE_BETA.has(data.type)) return data;
  try {
    return serverEventFromBeta(data);
  } catch (err) {
    return new InvalidServerEvent(`malformed '${data.type}' event: ${err.name}`, data);
  }
}

function serverEventFromBeta(event) {
  const kind = event.type;
  const out = { ...event, type: own(SERVER_RENAMES, kind) || kind };
  if (kind.startsWith("transcription_session.")) {
    out.type = kind.slice("transcription_".length);
    if (isObject(event.session)) out.session = sessionFromBeta(event.session, "transcription");
  } else if ((kind === "session.created" || kind === "session.updated") && isObject(event.session)) {
    out.session = sessionFromBeta(event.session, "realtime");
  }
  if (isObject(out.item)) out.item = itemFromBeta(out.item);
  if (isObject(out.response)) out.response = responseFromBeta(out.response);
  return out;
}

const formatFromBeta = (fmt) => (typeof fmt === "string" && own(BETA_FORMATS, fmt) ? { ...BETA_FORMATS[fmt] } : fmt);
const modalitiesFromBeta = (mods) => (Array.isArray(mods) ? (mods.includes("audio") ? ["audio"] : ["text"]) : mods);

function sessionFromBeta(beta, kind) {
  if (beta.type === "realtime" || beta.type === "transcription" || "audio" in beta || "output_modalities" in beta) {
    return copy(beta); // already GA (only GA nests `audio` or names `output_modalities`)
  }
  const ga = { type: kind };
  for (const key of ["id", "object", "expires_at"]) if (key in beta) ga[key] = beta[key];
  const input = {};
  const output = {};
  if ("input_audio_format" in beta) input.format = formatFromBeta(beta.input_audio_format);
  for (const [betaKey, gaKey] of [["input_audio_transcription", "transcription"], ["turn_detection", "turn_detection"],
    ["input_audio_noise_reduction", "noise_reduction"]]) {
    if (betaKey in beta) input[gaKey] = copy(beta[betaKey]);
  }
  if (kind === "realtime") {
    if ("model" in beta) ga.model = beta.model;
    if ("modalities" in beta) ga.output_modalities = modalitiesFromBeta(beta.modalities);
    for (const key of ["instructions", "tools", "tool_choice", "tracing", "prompt"]) if (key in beta) ga[key] = copy(beta[key]);
    if ("voice" in beta) output.voice = beta.voice;
    if ("output_audio_format" in beta) output.format = formatFromBeta(beta.output_audio_format);
    if ("speed" in beta) output.speed = beta.speed;
    if ("max_response_output_tokens" in beta) ga.max_output_tokens = beta.max_response_output_tokens;
  }
  if ("include" in beta) ga.include = beta.include;
  const audio = {};
  if (Object.keys(input).length) audio.input = input;
  if (Object.keys(output).length) audio.output = output;
  if (Object.keys(audio).length) ga.audio = audio;
  return ga;
}

const CONTENT_FROM_BETA = { text: "output_text", audio: "output_audio" };

function itemFromBeta(item) {
  if (!isObject(item) || item.role !== "assistant" || !Array.isArray(item.content)) return item;
  return {
    ...item,
    content: item.content.map((p) => (isObject(p) && own(CONTENT_FROM_BETA, p.type)
      ? { ...p, type: CONTENT_FROM_BETA[p.type] } : p)),
  };
}

function responseFromBeta(resp) {
  const out = {};
  for (const [key, value] of Object.entries(resp)) {
    if (!["modalities", "voice", "output_audio_format", "temperature", "output"].includes(key)) out[key] = value;
  }
  if ("output" in resp) out.output = Array.isArray(resp.output) ? resp.output.map(itemFromBeta) : resp.output;
  if ("modalities" in resp) out.output_modalities = modalitiesFromBeta(resp.modalities);
  const audioOut = {};
  if ("voice" in resp) audioOut.voice = resp.voice;
  if ("output_audio_format" in resp) audioOut.format = formatFromBeta(resp.output_audio_format);
  if (Object.keys(audioOut).length) out.audio = { output: audioOut };
  return out;
}
