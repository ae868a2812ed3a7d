// devices.js: the audio inputs, and the microphone picker of the pages: filled at once, and again
// whenever the inputs change or the microphone is allowed (browsers name no device before that).
import { escape } from "./ui.js";

const UNNAMED = "Default microphone (the others are listed once you allow the microphone)";

/**
 * The audio inputs. Before the microphone is allowed browsers name none (Chrome lists one input with
 * no id and no label): call it again after getUserMedia, or from `watchMicrophones`.
 */
export async function listMicrophones() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return [];
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices.filter((d) => d.kind === "audioinput").map((d) => ({
    deviceId: d.deviceId,
    label: d.label || "Microphone",
    named: Boolean(d.deviceId && d.label),
    // Aggregate and virtual devices (a macOS "Mixed Input", say) can carry no voice or confuse the VAD.
    virtual: /aggregate|virtual|loopback|blackhole|soundflower|mixed|stereo mix|monitor/i.test(d.label || ""),
  }));
}

/** Call `callback` when the inputs change: a device plugged in or out, or the microphone allowed. */
export function watchMicrophones(callback) {
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener("devicechange", callback);
  }
  if (navigator.permissions && navigator.permissions.query) {
    navigator.permissions.query({ name: "microphone" }).then((status) => {
      status.addEventListener("change", callback);
    }).catch(() => {}); // a browser that cannot tell: devicechange and the page's own refresh remain
  }
}

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
