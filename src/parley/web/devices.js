// The microphone picker of the pages: filled at once, and again whenever the inputs change or the
// microphone is allowed (browsers name no device before that).
import { listMicrophones, watchMicrophones } from "/parley.js";

const escape = (t) => String(t ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const UNNAMED = "Default microphone (the others are listed once you allow the microphone)";

/** Keep `select` listing the microphones; `warning` shows when the chosen one looks virtual. Returns a refresh. */
export function microphonePicker(select, warning) {
  const refresh = async () => {
    let mics = [];
    try {
      mics = (await listMicrophones()).filter((m) => m.named);
    } catch {
      /* no device list: the default microphone still works */
    }
    const current = select.value;
    select.innerHTML = mics.length
      ? mics.map((m) => `<option value="${escape(m.deviceId)}">${escape(m.label)}</option>`).join("")
      : `<option value="">${UNNAMED}</option>`;
    if (current && mics.some((m) => m.deviceId === current)) select.value = current;
    const chosen = mics.find((m) => m.deviceId === select.value);
    warning.hidden = !(chosen && chosen.virtual);
  };
  watchMicrophones(refresh);
  refresh();
  return refresh;
}
