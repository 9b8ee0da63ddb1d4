// The recorder page: camera, MediaRecorder, encryption of each piece, the
// outbox and what the person sees. docs/recorder.md describes the design.
//
// Order of safety: a piece is encrypted and written to IndexedDB (the outbox)
// before any upload of it is tried; the uploader deletes it only after the
// server's 200/201. The content key K lives only in this page's memory.

import { sealContentKey } from "./hpke.js";
import { base64url, encryptChunk, fromBase64url, importContentKey, newContentKey } from "./chunks.js";
import { Outbox } from "./outbox.js";
import { DeviceApi, NeedsEnrollmentCode, Uploader } from "./uploader.js";

const TIMESLICE_MS = 1000;
// MP4 with a keyframe every second: each piece after the first starts at a
// `moof`, so a recording cut anywhere decodes up to its last whole second
// (FIELD-NOTES.md). Plain "video/mp4" is for browsers with other MP4 audio
// (Safari's AAC); WebM where MP4 is not offered at all.
const FORMATS = [
  { mimeType: "video/mp4;codecs=avc1,opus", videoKeyFrameIntervalDuration: 1000 },
  { mimeType: "video/mp4", videoKeyFrameIntervalDuration: 1000 },
  { mimeType: "video/webm;codecs=vp8,opus" },
  { mimeType: "video/webm" },
];
const VIDEO_BITS_PER_SECOND = 2_500_000; // short uploads on a weak connection

const $ = (id) => document.getElementById(id);
const ui = {
  button: $("record"), preview: $("preview"), previewIdle: $("preview-idle"), badge: $("rec-badge"),
  elapsed: $("elapsed"), problem: $("problem"), note: $("note"), safe: $("safe"), waiting: $("waiting"),
  waitingBox: document.querySelector(".number-waiting"), connection: $("connection"),
  connectionText: $("connection-text"), enroll: $("enroll"), enrollCode: $("enroll-code"),
  enrollHelp: $("enroll-help"), reference: $("reference"), referenceId: $("reference-id"),
};

const page = {
  outbox: null, api: null, uploader: null, keys: null, session: null,
  state: "loading", // loading | idle | starting | recording | stopping | unsupported
  problem: null, // {title, detail}
  shownRecordingId: null,
};

function chooseFormat() {
  if (typeof MediaRecorder.isTypeSupported !== "function") return {};
  return FORMATS.find((f) => MediaRecorder.isTypeSupported(f.mimeType)) || {};
}

function showProblem(title, detail = "") {
  page.problem = { title, detail };
  render();
}

function clearProblem() {
  page.problem = null;
  render();
}

/** One recording: camera stream in, encrypted pieces into the outbox. */
class RecordingSession {
  constructor(stream, keys) {
    this.stream = stream;
    this.keys = keys;
    this.recordingId = crypto.randomUUID(); // lowercase, canonical
    this.nextIndex = 0;
    this.chain = Promise.resolve();
    this.stopRequested = false;
    this.held = []; // pieces delivered after stop() was called
    this.startedAt = null;
    this.finished = new Promise((resolve) => { this.resolveFinished = resolve; });
  }

  async start() {
    const raw = newContentKey();
    this.key = await importContentKey(raw);
    const sealed = await sealContentKey(fromBase64url(this.keys.public_key), this.recordingId, raw);
    raw.fill(0); // K lives on only as a non-extractable CryptoKey
    const format = chooseFormat();
    const options = { ...format, videoBitsPerSecond: VIDEO_BITS_PER_SECOND };
    this.recorder = new MediaRecorder(this.stream, options);
    this.startedAt = new Date();
    const body = {
      recording_id: this.recordingId,
      content_type: format.mimeType || this.recorder.mimeType || "video/webm",
      started_at: this.startedAt.toISOString(),
      key_id: this.keys.key_id,
      sealed_key: base64url(sealed),
    };
    // Held while this page records: a page opened later can tell a
    // recording whose page died (lock free) from one still going in
    // another tab (lock held). Granted before the recording is in the
    // outbox, so no other tab ever sees it without its lock.
    if (navigator.locks) {
      await new Promise((held) => navigator.locks.request(recordingLock(this.recordingId), () => {
        held();
        return this.finished;
      }));
    }
    await page.outbox.addRecording(body);
    this.boundary = this.startedAt;
    this.recorder.ondataavailable = (event) => this.onPiece(event.data);
    this.recorder.onstop = () => this.onStop();
    this.recorder.onerror = (event) => {
      showProblem("The recording stopped because of an error in this browser.", String(event.error || ""));
    };
    this.recorder.start(TIMESLICE_MS);
    page.uploader.kick();
  }

  stop() {
    if (this.stopRequested) return;
    this.stopRequested = true;
    if (this.recorder.state !== "inactive") this.recorder.stop();
  }

  onPiece(blob) {
    const capturedAt = this.boundary.toISOString();
    this.boundary = new Date();
    // After stop() the last pieces wait for the `stop` event, so that the
    // very last one is encrypted as "final".
    if (this.stopRequested) {
      this.held.push({ blob, capturedAt });
      return;
    }
    if (blob.size) this.enqueue(blob, capturedAt, false);
  }

  onStop() {
    // A recorder that stopped by itself (camera taken by another app) ends
    // the same way: its last piece, or an empty one, is the final chunk.
    this.stopRequested = true;
    const held = this.held.filter((p) => p.blob.size > 0);
    if (!held.length) held.push({ blob: new Blob([]), capturedAt: this.boundary.toISOString() });
    held.forEach((p, i) => this.enqueue(p.blob, p.capturedAt, i === held.length - 1));
    this.chain.then(() => this.resolveFinished());
  }

  enqueue(blob, capturedAt, final) {
    this.chain = this.chain.then(async () => {
      const index = this.nextIndex;
      this.nextIndex += 1; // never reuse an index: its nonce is derived from it
      const plaintext = new Uint8Array(await blob.arrayBuffer());
      const body = await encryptChunk(this.key, this.recordingId, index, plaintext, final);
      await page.outbox.addPiece(
        { recording_id: this.recordingId, index, body, final, captured_at: capturedAt },
        { stopped: final },
      );
      page.uploader.kick();
      render();
    }).catch((error) => {
      const full = error && error.name === "QuotaExceededError";
      showProblem(full ? "This phone has no storage space left for the video." : "A piece of the video could not be saved on this phone.",
        full ? "Free some space; what is already on the server stays safe." : String(error && error.message || error));
    });
  }
}

async function openCamera() {
  const video = { facingMode: { ideal: "environment" }, width: { ideal: 1280 }, height: { ideal: 720 } };
  try {
    return await navigator.mediaDevices.getUserMedia({ video, audio: true });
  } catch (error) {
    // No microphone at all: video alone is still evidence.
    if (error.name === "NotFoundError") return navigator.mediaDevices.getUserMedia({ video, audio: false });
    throw error;
  }
}

function cameraProblem(error) {
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return ["The camera or microphone was not allowed.",
        "Allow the camera and microphone for this site in your browser's settings, then press Start recording again."];
    case "NotFoundError":
      return ["No camera was found on this device.", ""];
    case "NotReadableError":
    case "AbortError":
      return ["The camera is busy.", "Another app may be using it. Close that app, then press Start recording again."];
    default:
      return ["The camera could not be started.", String(error && error.message || error)];
  }
}

async function startRecording() {
  clearProblem();
  page.state = "starting";
  render();
  let keys = page.keys;
  if (!keys) {
    try {
      keys = page.keys = await page.api.fetchKeys();
    } catch {
      page.state = "idle";
      showProblem("Cannot start: this page has not reached the server yet.",
        "It needs the server's lock (its public key) once. Check the connection and try again.");
      return;
    }
  }
  let stream;
  try {
    stream = await openCamera();
  } catch (error) {
    page.state = "idle";
    showProblem(...cameraProblem(error));
    return;
  }
  const session = new RecordingSession(stream, keys);
  try {
    await session.start();
  } catch (error) {
    stream.getTracks().forEach((t) => t.stop());
    page.state = "idle";
    showProblem("The recording could not start.", String(error && error.message || error));
    return;
  }
  page.session = session;
  page.shownRecordingId = session.recordingId;
  ui.preview.srcObject = stream;
  ui.preview.play().catch(() => {});
  page.state = "recording";
  keepScreenOn(true);
  // The camera can end by itself (unplugged, taken by a phone call).
  stream.getVideoTracks().forEach((track) => track.addEventListener("ended", () => stopRecording()));
  session.finished.then(() => finishSession(session));
  render();
}

function stopRecording() {
  const session = page.session;
  if (!session || page.state !== "recording") return;
  page.state = "stopping";
  session.stop();
  render();
}

function finishSession(session) {
  session.stream.getTracks().forEach((t) => t.stop());
  if (page.session === session) {
    page.session = null;
    ui.preview.srcObject = null;
    page.state = "idle";
  }
  keepScreenOn(false);
  render();
}

let wakeLock = null;
async function keepScreenOn(on) {
  try {
    if (on && "wakeLock" in navigator) wakeLock = await navigator.wakeLock.request("screen");
    else if (!on && wakeLock) {
      await wakeLock.release();
      wakeLock = null;
    }
  } catch {
    wakeLock = null; // not offered here: the person keeps the screen on
  }
}

function formatElapsed(ms) {
  const seconds = Math.floor(ms / 1000);
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

// Rendering reads the outbox, so it is asynchronous; calls coalesce.
let rendering = null;
let renderAgain = false;
function render() {
  if (rendering) {
    renderAgain = true;
    return rendering;
  }
  rendering = (async () => {
    do {
      renderAgain = false;
      try {
        await draw();
      } catch (error) {
        console.error("render", error);
      }
    } while (renderAgain);
    rendering = null;
  })();
  return rendering;
}

async function draw() {
  const state = page.state;
  document.body.dataset.recorderState = state;
  const upload = page.uploader ? page.uploader.state : {};

  // The button.
  const recording = state === "recording";
  ui.button.classList.toggle("is-recording", recording || state === "stopping");
  ui.button.textContent = {
    loading: "Getting ready…", starting: "Starting the camera…", recording: "Stop recording",
    stopping: "Finishing…", unsupported: "Recording is not possible here",
  }[state] || "Start recording";
  // Busy moments only look disabled: a disabled button would drop the
  // keyboard focus, and the next key press would go nowhere.
  const usable = state === "idle" || state === "recording";
  ui.button.disabled = state === "loading" || state === "unsupported";
  ui.button.setAttribute("aria-disabled", String(!usable));
  ui.button.setAttribute("aria-pressed", String(recording));

  ui.previewIdle.hidden = Boolean(page.session);
  ui.badge.hidden = !recording;
  if (page.session && page.session.startedAt) ui.elapsed.textContent = formatElapsed(Date.now() - page.session.startedAt);

  // The numbers: pieces are about a second each.
  let safe = 0;
  let waiting = 0;
  let refused = 0;
  let current = null;
  if (page.outbox) {
    current = page.shownRecordingId ? await page.outbox.getRecording(page.shownRecordingId) : await page.outbox.latestRecording();
    if (current) page.shownRecordingId = current.recording_id;
    safe = current ? current.acked : 0;
    waiting = await page.outbox.waitingCount();
    refused = await page.outbox.rejectedCount();
  }
  ui.safe.textContent = String(safe);
  ui.safe.dataset.recordingId = current ? current.recording_id : "";
  ui.waiting.textContent = String(waiting);
  ui.waitingBox.classList.toggle("has-backlog", waiting > 2);
  ui.reference.hidden = !current;
  ui.referenceId.textContent = current ? current.recording_id : "";
  ui.reference.dataset.recordingId = current ? current.recording_id : "";

  // The connection.
  const offline = navigator.onLine === false;
  const connection = offline ? "offline" : upload.reachable === false ? "unreachable" : upload.reachable ? "online" : "unknown";
  ui.connection.dataset.state = connection;
  ui.connectionText.textContent = {
    offline: "Offline — the video is kept on this phone",
    unreachable: "Cannot reach the server — the video is kept on this phone",
    online: "Online — connected to the server",
    unknown: "Checking the connection…",
  }[connection];

  // What to tell the person.
  let note = "";
  if (state === "recording" && upload.needsCode) {
    note = "Recording. The video is kept on this phone until you enter the code below.";
  } else if (state === "recording") {
    note = connection === "online" || connection === "unknown"
      ? "Recording. Each second is sent as you film."
      : "Recording. Keep filming: the video is saved on this phone and will be sent when the connection comes back.";
  } else if (state === "stopping") {
    note = "Finishing the last second…";
  } else if (current && state === "idle") {
    if (current.refused) note = "";
    else if (waiting === 0 && current.completed && current.abandoned) {
      note = `The last recording was cut off. All ${safe} seconds this phone kept of it are safe on the server.`;
    } else if (waiting === 0 && current.completed) note = `Done. All ${safe} seconds of the last recording are safe on the server.`;
    else if (waiting > 0) note = `Stopped. ${waiting} seconds are still waiting to be sent; keep this page open until they are.`;
    else note = "Stopped.";
  } else if (state === "idle") {
    note = "Press the button to start recording.";
  }
  ui.note.textContent = note;

  // Problems: the page's own first, then what the server said.
  let problem = page.problem;
  if (!problem && current && current.refused) {
    problem = {
      title: "The server refused this recording, so it cannot be sent.",
      detail: `${current.refused.message || ""} (${current.refused.error}). It is kept on this phone.`,
    };
  } else if (!problem && refused) {
    problem = { title: `The server refused ${refused} piece${refused === 1 ? "" : "s"} of video.`, detail: "They are kept on this phone; the rest is sent as usual." };
  } else if (!problem && upload.problem && upload.problem.kind === "bug") {
    problem = { title: "Sending stopped because of an error in this page.", detail: upload.problem.message };
  }
  ui.problem.hidden = !problem;
  ui.problem.replaceChildren();
  if (problem) {
    const title = document.createElement("p");
    title.textContent = problem.title;
    ui.problem.append(title);
    if (problem.detail) {
      const detail = document.createElement("p");
      detail.textContent = problem.detail;
      ui.problem.append(detail);
    }
  }

  // The enrollment code, when the server asks for one.
  ui.enroll.hidden = !upload.needsCode;
  if (upload.needsCode) {
    ui.enrollHelp.textContent = upload.needsCode.codeWasGiven
      ? "That code was not accepted. Check it and try again; recordings wait on this phone meanwhile."
      : "This server only accepts phones with a code from the organisation running it. Ask them for it, or open the link they gave you. You can record now; the video waits on this phone until the code is in.";
  }
}

function recordingLock(recordingId) {
  return `witness-recording-${recordingId}`;
}

/** Recordings whose page died while recording: never stopped, lock free. */
async function markAbandonedRecordings() {
  if (!navigator.locks) return;
  for (const recording of await page.outbox.recordingsToSend()) {
    if (recording.stopped) continue;
    await navigator.locks.request(recordingLock(recording.recording_id), { ifAvailable: true }, async (lock) => {
      if (lock) await page.outbox.updateRecording(recording.recording_id, (r) => { r.stopped = true; r.abandoned = true; });
    });
  }
}

async function prepare() {
  // First what is already on this phone: an earlier recording's backlog.
  page.keys = (await page.outbox.getSetting("keys")) || null;
  await markAbandonedRecordings();
  page.uploader.kick();
  // Then, from the server: fresh keys (kept for recording offline later),
  // and this phone's registration, so that a server wanting an enrollment
  // code says so before anything is recorded.
  try {
    page.keys = await page.api.fetchKeys();
  } catch {
    // offline: the cached keys (if any) will do
  }
  try {
    await page.uploader.register();
    forgetCodeInAddress();
  } catch {
    // shown from the uploader's state (a code is needed), or retried later
  }
}

function forgetCodeInAddress() {
  const url = new URL(location.href);
  if (!url.searchParams.has("code")) return;
  url.searchParams.delete("code");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
}

async function submitCode(event) {
  event.preventDefault();
  const code = ui.enrollCode.value.trim();
  if (!code) return;
  try {
    await page.uploader.register(code);
    forgetCodeInAddress();
    clearProblem();
    page.uploader.kick();
  } catch (error) {
    if (!(error instanceof NeedsEnrollmentCode)) {
      showProblem("Could not reach the server to check the code.", "Try again when the connection is back.");
    }
  }
}

function unsupportedReason() {
  if (!window.isSecureContext || !(globalThis.crypto && crypto.subtle)) {
    return ["This page must be opened over a secure connection.",
      "Its address must start with https:// (the camera and the encryption only work then). Ask the organisation for the right link."];
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || typeof MediaRecorder === "undefined") {
    return ["This browser cannot record video from a web page.", "Try an up-to-date Chrome, Firefox or Safari."];
  }
  if (!globalThis.indexedDB) {
    return ["This browser does not let the page keep the video on the phone.", "Private or incognito mode can cause this; open the page in a normal window."];
  }
  return null;
}

async function main() {
  const reason = unsupportedReason();
  if (reason) {
    page.state = "unsupported";
    showProblem(...reason);
    return;
  }
  try {
    page.outbox = await Outbox.open();
  } catch (error) {
    page.state = "unsupported";
    showProblem("This browser does not let the page keep the video on the phone.",
      "Private or incognito mode can cause this; open the page in a normal window.");
    return;
  }
  page.api = new DeviceApi(page.outbox);
  page.uploader = new Uploader(page.outbox, page.api, () => render());
  page.uploader.enrollmentCode = new URL(location.href).searchParams.get("code");
  if (navigator.storage && navigator.storage.persist) navigator.storage.persist().catch(() => {});

  ui.button.addEventListener("click", () => {
    if (page.state === "recording") stopRecording();
    else if (page.state === "idle") startRecording();
  });
  ui.enroll.addEventListener("submit", submitCode);
  window.addEventListener("online", () => {
    page.uploader.wake();
    page.api.fetchKeys().catch(() => {}); // also says whether the server answers
    render();
  });
  window.addEventListener("offline", () => render());
  window.addEventListener("beforeunload", (event) => {
    if (page.state === "recording") event.preventDefault(); // leaving stops the camera
  });
  setInterval(() => { if (page.state === "recording") render(); }, 1000);

  page.state = "idle";
  render();
  await prepare();
  render();
}

main();
