// conversation.js: a conversation as the server's events describe it, the browser's copy of
// parley.protocol.conversation.ConversationState (same rules, same change kinds; a test feeds one
// event stream through both and compares). Sans-I/O: no DOM, no sockets, no clock (`now` is the
// caller's, it only stamps new items and responses).
//
// The rules, each written once here as in Python:
// - item order by `previous_item_id` (null: the first item; unknown or absent: the end), not by
//   arrival; an item a response mentions before the conversation places it waits at the end;
// - out-of-band responses (`conversation_id` null) keep their items to themselves;
// - an item is complete with its words: typed text at once, a user's audio when its transcript
//   arrives (or fails, or the session does not transcribe), an answer at its `done`;
// - the active response, the session as the server reported it;
// - an item's text, and the heard text of a truncated answer.
//
// Records (items, responses, changes) keep the protocol's snake_case field names, as in Python;
// the class's own API is camelCase. A change is a frozen `{kind, ...fields}`, its fields those of
// the Python record of that kind, e.g. `{kind: "item_completed", item, text, first, usage}`.

import { InvalidServerEvent, isObject, readServerEvent, str } from "./protocol.js";

const DONE = ["completed", "incomplete"];
const change = (kind, fields = {}) => Object.freeze({ kind, ...fields });
const isInt = (value) => Number.isInteger(value);
const b64Size = (b64) => Math.floor((b64.length * 3) / 4) - (b64.endsWith("==") ? 2 : b64.endsWith("=") ? 1 : 0);

/** The words of a message item: typed text or the transcript of its audio. */
export function contentText(item) {
  const words = [];
  const content = isObject(item) ? item.content : null;
  for (const part of Array.isArray(content) ? content : []) {
    if (!isObject(part)) continue;
    const text = ["input_text", "output_text", "text"].includes(part.type) ? part.text : part.transcript;
    if (typeof text === "string" && text.trim()) words.push(text.trim());
  }
  return words.join(" ");
}

/** One item as a reader knows it (no audio bytes). */
export class Item {
  constructor(id, fields = {}) {
    this.id = id;
    this.type = "message";
    this.role = null;
    this.status = "in_progress";
    this.content = [];
    this.call_id = null;
    this.name = null;
    this.arguments = "";
    this.output = null;
    this.response_id = null;
    this.previous_item_id = null;
    this.out_of_band = false;
    this.created_at = 0;
    this.parts = []; // words: deltas until the final text is known
    this.final_text = null;
    // a user's audio: whether it is transcribed; an answer's audio: ms received, where it was cut,
    // and the words the server kept when it was cut
    this.has_audio = false;
    this.transcription_failed = false;
    this.audio_ms = 0;
    this.truncated_ms = null;
    this.heard = null;
    this.speech_start_ms = null;
    this.speech_end_ms = null;
    Object.assign(this, fields);
  }

  /** Typed text, or the transcript of the item's audio (so far). */
  get text() {
    if (this.final_text !== null) return this.final_text;
    if (this.parts.length) return this.parts.join("");
    return contentText(this);
  }

  /** The words the listener heard: as the server trimmed them, else the transcript cut in
   * proportion to the audio played. */
  get heard_text() {
    if (this.truncated_ms === null) return this.text;
    if (this.heard !== null) return this.heard;
    const text = this.text;
    if (this.audio_ms <= 0 || this.truncated_ms >= this.audio_ms) return text;
    const words = text.split(/\s+/).filter(Boolean);
    return words.slice(0, Math.floor((words.length * this.truncated_ms) / this.audio_ms)).join(" ");
  }

  get completed() {
    return DONE.includes(this.status);
  }
}

/** A response in progress (or, in a response_done change, just ended). */
export class Response {
  constructor(id, fields = {}) {
    this.id = id;
    this.out_of_band = false;
    this.status = "in_progress";
    this.metadata = null;
    this.created_at = 0;
    this.item_ids = [];
    this.items = new Map(); // out-of-band items live here, not in the conversation
    Object.assign(this, fields);
  }
}

// Events that carry their item (`item.id`) or response (`response.id`) rather than naming it.
const ITEM_EVENTS = new Set(["conversation.item.added", "conversation.item.done", "conversation.item.retrieved",
  "response.output_item.added", "response.output_item.done"]);
const RESPONSE_EVENTS = new Set(["response.created", "response.done"]);
const itemIdOf = (event) => (ITEM_EVENTS.has(event.type) ? str(isObject(event.item) ? event.item.id : null) : str(event.item_id));
const responseIdOf = (event) => (RESPONSE_EVENTS.has(event.type)
  ? str(isObject(event.response) ? event.response.id : null) : str(event.response_id));

/** Items by id in the server's order, the responses in progress and the session. */
export class ConversationState {
  constructor() {
    this._items = new Map();
    this._order = [];
    this.session = {};
    this.responses = new Map();
    this.activeResponseId = null;
    this._speech = null; // [item id, start, end]
    this._completed = new Map(); // item id -> the words its last item_completed carried
    this._bytesPerMs = 48; // of output audio, in the session's output format
    this._now = 0;
  }

  // -- reading ------------------------------------------------------------------------------

  get size() {
    return this._order.length;
  }

  get ids() {
    return [...this._order];
  }

  /** The conversation's items, in order. */
  get items() {
    return this._order.map((id) => this._items.get(id));
  }

  has(itemId) {
    return this._items.has(itemId);
  }

  /** An item of the conversation, or of a response in progress (out of band). */
  get(itemId) {
    if (itemId === null || itemId === undefined) return null;
    const item = this._items.get(itemId);
    if (item) return item;
    for (const response of this.responses.values()) {
      if (response.items.has(itemId)) return response.items.get(itemId);
    }
    return null;
  }

  itemText(itemId) {
    const item = this.get(itemId);
    return item ? item.text : "";
  }

  heardText(itemId) {
    const item = this.get(itemId);
    return item ? item.heard_text : "";
  }

  /** Whether an item_completed has been reported for the item (its words are final, for now). */
  isComplete(itemId) {
    return this._completed.has(itemId);
  }

  /** Whether the session (as last reported) transcribes the user's audio. */
  get transcribing() {
    if (this.session.type === "transcription") return true;
    const audio = this.session.audio;
    const input = isObject(audio) ? audio.input : null;
    return isObject(input) && isObject(input.transcription);
  }

  // -- applying events ------------------------------------------------------------------------

  /** Apply one server event (a JSON string, a parsed object, or what readServerEvent made of one);
   * the changes it made. Never throws. */
  apply(event, now) {
    const ev = readServerEvent(event);
    const handler = Object.hasOwn(HANDLERS, ev.type) ? HANDLERS[ev.type] : null;
    if (!handler) {
      return ev instanceof InvalidServerEvent ? [change("invalid_event", { reason: ev.reason })] : [];
    }
    this._now = now;
    const out = [];
    try {
      handler.call(this, ev, out);
    } catch (err) {
      // A field of the wrong shape: the event is invalid, the state keeps what it had.
      out.push(change("invalid_event", { reason: `malformed '${ev.type}' event: ${err.name}: ${err.message}` }));
    }
    return out;
  }

  /** The session is gone: whatever it was writing ends here, as `incomplete`. */
  connectionLost(reason) {
    const out = [];
    for (const [rid, response] of [...this.responses]) {
      this.responses.delete(rid);
      response.status = "incomplete";
      for (const item of this._responseItems(response)) {
        if (item.status === "in_progress") {
          item.status = "incomplete";
          this._checkComplete(item, out);
        }
      }
      out.push(change("response_done", { response, status: "incomplete", status_details: { type: "incomplete", reason },
        usage: null, output: this._responseItems(response) }));
    }
    this.activeResponseId = null;
    this._speech = null;
    return out;
  }

  /** Drop an item without an event (a reader that knows it no longer exists upstream). */
  forget(itemId) {
    const item = this._items.get(itemId);
    if (!item) return null;
    this._items.delete(itemId);
    this._order.splice(this._order.indexOf(itemId), 1);
    this._completed.delete(itemId);
    return item;
  }

  clear() {
    this._items.clear();
    this._order.length = 0;
    this._completed.clear();
    this.responses.clear();
    this.activeResponseId = null;
  }

  // -- placement ------------------------------------------------------------------------------

  /** Put `item` after `previous`; `explicit` when the event said where (null: first). */
  _place(item, previous, explicit) {
    item.previous_item_id = previous;
    if (previous !== null && this._items.has(previous) && previous !== item.id) {
      this._order.splice(this._order.indexOf(previous) + 1, 0, item.id);
    } else if (previous === null && explicit) {
      this._order.unshift(item.id);
    } else {
      this._order.push(item.id);
    }
  }

  _upsert(wire, previous, explicit, out) {
    const itemId = str(wire.id);
    if (!itemId) {
      out.push(change("invalid_event", { reason: "an item without an id" }));
      return null;
    }
    const prev = str(previous);
    let item = this._items.get(itemId);
    if (!item) {
      item = new Item(itemId, { created_at: this._now });
      updateItem(item, wire);
      this._items.set(itemId, item);
      this._place(item, prev, explicit);
      out.push(change("item_placed", { item, previous_item_id: prev }));
      return item;
    }
    if (explicit && prev !== item.previous_item_id && (prev === null || this._items.has(prev)) && prev !== itemId) {
      // The conversation says where an item a response mentioned first belongs.
      this._order.splice(this._order.indexOf(itemId), 1);
      this._place(item, prev, true);
    }
    updateItem(item, wire);
    return item;
  }

  /** A user audio item an event names before (or without) its placement. */
  _orphanUserAudio(itemId, out) {
    let item = this._items.get(itemId);
    if (!item) {
      item = newUserAudio(itemId, this._now);
      this._items.set(itemId, item);
      this._place(item, null, false);
      out.push(change("item_placed", { item, previous_item_id: null }));
    }
    return item;
  }

  // -- completion -----------------------------------------------------------------------------

  /** A user's audio whose transcript is still on the way. */
  _wordsPending(item) {
    if (item.role !== "user" || !item.has_audio || item.final_text !== null || item.transcription_failed) return false;
    if (Object.keys(this.session).length) return this.transcribing;
    // No session seen (a reader that joined late): an audio part without a transcript waits.
    return item.content.some((p) => p.type === "input_audio" && (p.transcript === null || p.transcript === undefined));
  }

  _checkComplete(item, out, usage = null) {
    if (!item.completed || this._wordsPending(item)) return;
    const text = item.text;
    const before = this._completed.get(item.id);
    if (before !== undefined && before === text) return;
    this._completed.set(item.id, text);
    out.push(change("item_completed", { item, text, first: before === undefined, usage }));
  }

  _responseItems(response) {
    return response.item_ids.map((id) => response.items.get(id) || this._items.get(id)).filter(Boolean);
  }

  /** The item an output event is about: in the conversation, or of an out-of-band response. */
  _responseItem(event, out, wire = null) {
    const itemId = itemIdOf(event) || str(wire ? wire.id : null);
    if (!itemId) return null;
    const rid = responseIdOf(event);
    const response = rid ? this.responses.get(rid) : undefined;
    let item = this._items.get(itemId) || (response ? response.items.get(itemId) : undefined);
    if (!item) {
      item = new Item(itemId, { role: "assistant", response_id: rid, created_at: this._now });
      if (response && response.out_of_band) {
        item.out_of_band = true;
        response.items.set(itemId, item);
      } else {
        this._items.set(itemId, item);
        this._place(item, null, false); // until the conversation says where
      }
      out.push(change("item_placed", { item, previous_item_id: null }));
    }
    if (response && !response.item_ids.includes(itemId)) response.item_ids.push(itemId);
    if (rid && item.response_id === null) item.response_id = rid;
    return item;
  }
}

function newUserAudio(id, now) {
  return new Item(id, { role: "user", status: "completed", has_audio: true, created_at: now,
    content: [{ type: "input_audio", transcript: null }] });
}

function needObject(value, name) {
  if (!isObject(value)) throw new TypeError(`'${name}' is not an object`);
  return value;
}

function updateItem(item, data) {
  const kind = str(data.type);
  if (kind) item.type = kind;
  const status = str(data.status);
  if (status) item.status = status;
  const role = str(data.role);
  if (role) item.role = role;
  if (Array.isArray(data.content)) {
    const parts = data.content.filter(isObject).map((p) => ({ ...p }));
    for (const p of parts) {
      delete p.audio; // never keep base64 audio in the state
      if (p.type === "input_audio" || p.type === "output_audio") item.has_audio = true;
    }
    if (parts.length || !item.content.length) item.content = parts;
    const words = contentText({ content: parts });
    if (words && item.truncated_ms !== null) {
      item.heard = words; // the server's copy of a cut answer holds the words that were heard
    } else if (words && (item.completed || (!item.parts.length && item.role === "user"))) {
      item.final_text = words;
    }
  }
  for (const key of ["call_id", "name", "output"]) {
    const value = str(data[key]);
    if (value !== null) item[key] = value;
  }
  const args = str(data.arguments);
  if (args !== null && (args || !item.arguments)) item.arguments = args;
  if (item.type === "message" && item.role === "user" && item.has_audio && item.status === "in_progress") {
    item.status = "completed"; // committed audio is final; only its transcript may follow
  }
}

// -- handlers (called with the state as `this`) -----------------------------------------------

function onSession(event, out) {
  const session = needObject(event.session, "session");
  const wasTranscribing = this.transcribing;
  this.session = session;
  const audio = session.audio;
  const output = isObject(audio) ? audio.output : null;
  const fmt = isObject(output) ? output.format : null;
  const name = isObject(fmt) ? fmt.type : fmt;
  this._bytesPerMs = name === "audio/pcmu" || name === "audio/pcma" ? 8 : 48;
  out.push(change("session_changed", { session }));
  // Items that waited for a transcript the session no longer promises are complete now.
  if (wasTranscribing && !this.transcribing) for (const item of this.items) this._checkComplete(item, out);
}

function onError(event, out) {
  const err = isObject(event.error) ? event.error : {};
  out.push(change("error_received", { code: str(err.code), message: String(err.message || ""), param: str(err.param),
    client_event_id: str(err.event_id), type: str(err.type) }));
}

function onSpeechStarted(event, out) {
  const start = isInt(event.audio_start_ms) ? event.audio_start_ms : null;
  const itemId = str(event.item_id);
  this._speech = [itemId, start, null];
  out.push(change("speech_started", { item_id: itemId, audio_start_ms: start }));
}

function onSpeechStopped(event, out) {
  const end = isInt(event.audio_end_ms) ? event.audio_end_ms : null;
  const itemId = str(event.item_id);
  const start = this._speech ? this._speech[1] : null;
  this._speech = [itemId, start, end];
  out.push(change("speech_stopped", { item_id: itemId, audio_end_ms: end }));
}

function onCommitted(event, out) {
  const itemId = str(event.item_id);
  if (!itemId) throw new RangeError("no item_id");
  const previous = str(event.previous_item_id);
  let item = this._items.get(itemId);
  if (!item) {
    item = newUserAudio(itemId, this._now);
    this._items.set(itemId, item);
    this._place(item, previous, "previous_item_id" in event);
    out.push(change("item_placed", { item, previous_item_id: previous }));
  }
  const speech = this._speech;
  if (speech && (speech[0] === itemId || speech[0] === null)) [item.speech_start_ms, item.speech_end_ms] = [speech[1], speech[2]];
  this._speech = null;
  out.push(change("input_committed", { item_id: itemId, previous_item_id: previous }));
}

function onCleared(_event, out) {
  this._speech = null;
  out.push(change("input_cleared"));
}

function onItemAdded(event, out) {
  const wire = needObject(event.item, "item");
  const item = this._upsert(wire, event.previous_item_id, "previous_item_id" in event, out);
  if (item) this._checkComplete(item, out);
}

function onRetrieved(event, out) {
  const wire = needObject(event.item, "item");
  const item = this.get(str(wire.id));
  if (item && item.truncated_ms !== null) {
    // Parley's engine trims a cut answer's transcript to what was played: the words heard.
    // OpenAI documents removing it instead; then the estimate from the audio stands.
    const words = contentText(wire);
    if (words) item.heard = words;
  }
  out.push(change("item_retrieved", { item, wire }));
}

function onTruncated(event, out) {
  const itemId = str(event.item_id);
  const end = event.audio_end_ms;
  if (!itemId || typeof end !== "number" || !Number.isFinite(end)) throw new RangeError("needs item_id and a numeric audio_end_ms");
  const item = this.get(itemId);
  const said = item ? item.text : "";
  if (item) {
    item.truncated_ms = end;
    item.heard = null;
  }
  out.push(change("item_truncated", { item_id: itemId, audio_end_ms: Math.trunc(end), heard: item ? item.heard_text : "", said }));
}

function onDeleted(event, out) {
  const itemId = str(event.item_id);
  if (!itemId) throw new RangeError("no item_id");
  this.forget(itemId);
  out.push(change("item_deleted", { item_id: itemId }));
}

function onTranscriptionDelta(event, out) {
  const itemId = str(event.item_id);
  if (!itemId || typeof event.delta !== "string") throw new RangeError("needs item_id and a string delta");
  const item = this._orphanUserAudio(itemId, out);
  item.parts.push(event.delta);
  out.push(change("transcript_delta", { item, delta: event.delta }));
}

function onTranscriptionCompleted(event, out) {
  const itemId = str(event.item_id);
  if (!itemId) throw new RangeError("no item_id");
  const item = this._orphanUserAudio(itemId, out);
  item.final_text = typeof event.transcript === "string" ? event.transcript.trim() : "";
  item.parts = [];
  item.transcription_failed = false;
  for (const part of item.content) if (part.type === "input_audio") part.transcript = item.final_text;
  this._checkComplete(item, out, isObject(event.usage) ? event.usage : null);
}

function onTranscriptionFailed(event, out) {
  const itemId = str(event.item_id);
  if (!itemId) throw new RangeError("no item_id");
  const item = this._orphanUserAudio(itemId, out);
  item.transcription_failed = true;
  this._checkComplete(item, out);
}

function onResponseCreated(event, out) {
  const resp = event.response;
  const rid = isObject(resp) ? str(resp.id) : null;
  if (!rid) throw new RangeError("a response without an id");
  const outOfBand = "conversation_id" in resp && resp.conversation_id === null;
  const response = new Response(rid, { out_of_band: outOfBand, metadata: isObject(resp.metadata) ? resp.metadata : null,
    created_at: this._now });
  this.responses.set(rid, response);
  if (!outOfBand) this.activeResponseId = rid;
  out.push(change("response_started", { response }));
}

function onOutputItem(event, out) {
  const wire = needObject(event.item, "item");
  const item = this._responseItem(event, out, wire);
  if (!item) throw new RangeError("an item without an id");
  updateItem(item, wire);
  if (event.type === "response.output_item.done") {
    if (item.status === "in_progress") item.status = "completed";
    this._checkComplete(item, out);
  }
}

function onTextDelta(event, out) {
  if (typeof event.delta !== "string") throw new TypeError("'delta' is not a string");
  const item = this._responseItem(event, out);
  if (!item) throw new RangeError("no item_id");
  item.parts.push(event.delta);
  out.push(change("transcript_delta", { item, delta: event.delta }));
}

function onTextDone(event, out) {
  const item = this._responseItem(event, out);
  const text = "transcript" in event ? event.transcript : event.text;
  if (item && typeof text === "string") item.final_text = text;
}

function onAudioDelta(event, out) {
  const b64 = event.delta;
  if (typeof b64 !== "string") throw new TypeError("'delta' is not a string");
  const item = (typeof event.item_id === "string" && this._items.get(event.item_id)) || this._responseItem(event, out);
  const ms = b64Size(b64) / this._bytesPerMs;
  if (item) item.audio_ms += ms;
  out.push(change("audio_received", { response_id: str(event.response_id), item_id: item ? item.id : null, delta: b64, ms }));
}

function onArgumentsDelta(event, out) {
  const item = this._responseItem(event, out);
  if (item && typeof event.delta === "string") {
    item.type = "function_call";
    item.role = null;
    item.arguments += event.delta;
  }
}

function onArgumentsDone(event, out) {
  const item = this._responseItem(event, out);
  if (!item) throw new RangeError("no item_id");
  item.type = "function_call";
  item.role = null;
  for (const key of ["arguments", "name", "call_id"]) {
    const value = str(event[key]);
    if (value !== null) item[key] = value;
  }
  item.status = "completed";
  this._checkComplete(item, out);
}

function onResponseDone(event, out) {
  const resp = needObject(event.response, "response");
  const rid = str(resp.id) || "";
  const status = str(resp.status) || "completed";
  let response = this.responses.get(rid);
  this.responses.delete(rid);
  if (!response) { // a response this reader never saw start
    response = new Response(rid, { out_of_band: "conversation_id" in resp && resp.conversation_id === null,
      created_at: this._now });
  }
  response.status = status;
  const final = status === "completed" ? "completed" : "incomplete";
  for (const wire of Array.isArray(resp.output) ? resp.output : []) {
    if (!isObject(wire) || !str(wire.id)) continue;
    let item = this._items.get(wire.id) || response.items.get(wire.id);
    if (!item) {
      if (response.out_of_band) {
        item = new Item(wire.id, { out_of_band: true, response_id: rid, created_at: this._now });
        response.items.set(wire.id, item);
        out.push(change("item_placed", { item, previous_item_id: null }));
      } else {
        item = this._upsert(wire, null, false, out);
        if (!item) continue;
        item.response_id = rid;
      }
    }
    if (!response.item_ids.includes(wire.id)) response.item_ids.push(wire.id);
    updateItem(item, wire);
    if (item.status === "in_progress") item.status = final;
  }
  for (const item of this._responseItems(response)) {
    if (item.status === "in_progress") item.status = final;
    this._checkComplete(item, out);
  }
  if (this.activeResponseId === rid) this.activeResponseId = null;
  out.push(change("response_done", { response, status, status_details: isObject(resp.status_details) ? resp.status_details : null,
    usage: isObject(resp.usage) ? resp.usage : null, output: this._responseItems(response) }));
}

function onPlaybackStarted(event, out) {
  const rid = str(event.response_id);
  const item = this.items.reverse().find((i) => i.response_id === rid && i.role === "assistant");
  out.push(change("playback_started", { response_id: rid, item_id: item ? item.id : null }));
}

function onPlaybackStopped(event, out) {
  out.push(change("playback_stopped", { response_id: str(event.response_id), cleared: event.type === "output_audio_buffer.cleared" }));
}

const HANDLERS = {
  "session.created": onSession,
  "session.updated": onSession,
  "error": onError,
  "input_audio_buffer.speech_started": onSpeechStarted,
  "input_audio_buffer.speech_stopped": onSpeechStopped,
  "input_audio_buffer.committed": onCommitted,
  "input_audio_buffer.cleared": onCleared,
  "conversation.item.added": onItemAdded,
  "conversation.item.done": onItemAdded,
  "conversation.item.retrieved": onRetrieved,
  "conversation.item.truncated": onTruncated,
  "conversation.item.deleted": onDeleted,
  "conversation.item.input_audio_transcription.delta": onTranscriptionDelta,
  "conversation.item.input_audio_transcription.completed": onTranscriptionCompleted,
  "conversation.item.input_audio_transcription.failed": onTranscriptionFailed,
  "response.created": onResponseCreated,
  "response.output_item.added": onOutputItem,
  "response.output_item.done": onOutputItem,
  "response.output_text.delta": onTextDelta,
  "response.output_audio_transcript.delta": onTextDelta,
  "response.output_text.done": onTextDone,
  "response.output_audio_transcript.done": onTextDone,
  "response.output_audio.delta": onAudioDelta,
  "response.function_call_arguments.delta": onArgumentsDelta,
  "response.function_call_arguments.done": onArgumentsDone,
  "response.done": onResponseDone,
  "output_audio_buffer.started": onPlaybackStarted,
  "output_audio_buffer.stopped": onPlaybackStopped,
  "output_audio_buffer.cleared": onPlaybackStopped,
};
