// Sends the outbox to the server as PROTOCOL.md and docs/protocol.md say:
// a recording is created first, then its chunks go in index order (WebM and
// MP4 pieces only decode as a byte-exact, in-order concatenation), each
// deleted from the outbox only after a 200 or 201. Network trouble is
// retried with capped exponential backoff and full jitter; an answer that
// will never succeed is shown and set aside, never retried for ever.

import { contentDigest } from "./chunks.js";

const REQUEST_TIMEOUT_MS = 60_000; // an answer means fsync'd: allow a busy disk
const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 30_000;
const RETRYABLE = new Set([408, 425, 429, 500, 502, 503, 504, 507]);
const DIGEST_RETRIES = 3;

/** No answer, or an answer that says "try again later". */
export class Unreachable extends Error {
  constructor(message, retryAfterMs = 0) {
    super(message);
    this.retryAfterMs = retryAfterMs;
  }
}

/** Uploading cannot go on until the person does something (an enrollment code). */
export class NeedsEnrollmentCode extends Error {
  constructor(message, codeWasGiven) {
    super(message);
    this.codeWasGiven = codeWasGiven;
  }
}

/** The server no longer takes this phone's registration (expired or revoked). */
class RegistrationEnded extends Error {}

function problemOf(answer) {
  const data = answer.data || {};
  return { status: answer.status, error: data.error || `http_${answer.status}`, message: data.message || "" };
}

/** The device API: one place that knows tokens, refresh and timeouts. */
export class DeviceApi {
  constructor(outbox, base = "") {
    this.outbox = outbox;
    this.base = base;
    this.onReach = () => {}; // told after every request whether the server answered
  }

  async send(method, path, { json, body, headers = {}, token } = {}) {
    const sent = { ...headers };
    if (token) sent.Authorization = `Bearer ${token}`;
    if (json !== undefined) {
      sent["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(this.base + path, { method, headers: sent, body, cache: "no-store", signal: abort.signal });
    } catch (error) {
      this.onReach(false);
      throw new Unreachable(navigator.onLine === false ? "offline" : "no answer from the server");
    } finally {
      clearTimeout(timer);
    }
    this.onReach(response.status < 500);
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null; // a proxy's HTML page, say
    }
    if (RETRYABLE.has(response.status) || response.status >= 500) {
      const retryAfter = Number(response.headers.get("Retry-After")) || 0;
      throw new Unreachable(`the server answered ${response.status}`, retryAfter * 1000);
    }
    return { status: response.status, data };
  }

  /** GET /v1/keys, cached in the outbox so a recording can start offline. */
  async fetchKeys() {
    const answer = await this.send("GET", "/v1/keys");
    if (answer.status !== 200 || !answer.data || !answer.data.hpke) throw new Unreachable("no keys from the server");
    await this.outbox.setSetting("keys", answer.data.hpke);
    return answer.data.hpke;
  }

  /** POST /v1/devices, stored before it is used (registration is not idempotent). */
  async register(enrollmentCode) {
    const answer = await this.send("POST", "/v1/devices", { json: enrollmentCode ? { enrollment_code: enrollmentCode } : {} });
    if (answer.status === 201) {
      const { device_id, access_token, refresh_token } = answer.data;
      const device = { device_id, access_token, refresh_token, registered_at: new Date().toISOString() };
      await this.outbox.setSetting("device", device);
      return device;
    }
    if (answer.status === 403 || answer.status === 400) {
      throw new NeedsEnrollmentCode(problemOf(answer).message, Boolean(enrollmentCode));
    }
    throw new Unreachable(`registration answered ${answer.status}`);
  }

  /** A device call; a 401 token_expired is refreshed and repeated once. */
  async authed(device, method, path, options = {}) {
    let answer = await this.send(method, path, { ...options, token: device.access_token });
    if (answer.status === 401 && answer.data && answer.data.error === "token_expired") {
      await this.refresh(device);
      answer = await this.send(method, path, { ...options, token: device.access_token });
    }
    if (answer.status === 401) throw new RegistrationEnded(problemOf(answer).error);
    return answer;
  }

  async refresh(device) {
    const answer = await this.send("POST", "/v1/auth/refresh", { token: device.refresh_token });
    if (answer.status === 200) {
      device.access_token = answer.data.access_token;
      await this.outbox.setSetting("device", device);
      return;
    }
    // The refresh token expired (a year) or the device was revoked.
    if (answer.status === 401) throw new RegistrationEnded(problemOf(answer).error);
    throw new Unreachable(`refresh answered ${answer.status}`);
  }
}

/**
 * Drains the outbox. `kick()` after adding a piece; `wake()` when the network
 * comes back. `onChange(state)` hears about every acknowledgement and every
 * change of `state`: {reachable, problem, needsCode}.
 */
export class Uploader {
  constructor(outbox, api, onChange = () => {}) {
    this.outbox = outbox;
    this.api = api;
    this.onChange = onChange;
    this.enrollmentCode = null;
    this.state = { reachable: null, problem: null, needsCode: null, busy: false };
    this.running = false;
    this.again = false;
    this.attempt = 0;
    this.digestFailures = new Map();
    this.wakeSleep = null;
    this.registering = null;
    api.onReach = (reachable) => {
      if (reachable !== this.state.reachable) this._set({ reachable });
    };
  }

  _set(change) {
    this.state = { ...this.state, ...change };
    this.onChange(this.state);
  }

  /** Something new is in the outbox: send it when the current pass allows. */
  kick() {
    if (this.running) {
      this.again = true;
      return;
    }
    this._loop();
  }

  /** The network is back: stop waiting out a backoff. */
  wake() {
    this.attempt = 0;
    if (this.wakeSleep) this.wakeSleep();
    this.kick();
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.wakeSleep = null;
        resolve();
      }
      this.wakeSleep = done;
    });
  }

  async _loop() {
    this.running = true;
    this._set({ busy: true });
    try {
      for (;;) {
        this.again = false;
        try {
          await this._pass();
          this.attempt = 0;
          if (this.state.problem) this._set({ problem: null });
          if (!this.again) return;
        } catch (error) {
          if (error instanceof NeedsEnrollmentCode) return; // until a code is given (kick)
          if (!(error instanceof Unreachable)) {
            this._set({ problem: { kind: "bug", message: String(error && error.message || error) } });
          } else {
            this._set({ problem: { kind: "unreachable", message: error.message } });
          }
          // Full jitter (docs/protocol.md): every phone at a demonstration
          // comes back at the same moment.
          const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
          this.attempt = Math.min(this.attempt + 1, 20);
          await this._sleep(Math.max(Math.random() * ceiling, error.retryAfterMs || 0));
        }
      }
    } finally {
      this.running = false;
      this._set({ busy: false });
    }
  }

  /**
   * Register this phone (POST /v1/devices) with `code`, or the code given
   * before. Throws NeedsEnrollmentCode (also shown in `state.needsCode`)
   * when the server wants a code it did not get, and Unreachable.
   */
  register(code = undefined) {
    if (code !== undefined) this.enrollmentCode = code;
    // One registration at a time, and none over a stored one: a second
    // device would orphan the recordings the first one created.
    if (!this.registering) {
      this.registering = this._register().finally(() => { this.registering = null; });
    }
    return this.registering;
  }

  async _register() {
    const stored = await this.outbox.getSetting("device");
    if (stored) return stored;
    try {
      const device = await this.api.register(this.enrollmentCode);
      this._set({ needsCode: null });
      return device;
    } catch (error) {
      if (error instanceof NeedsEnrollmentCode) {
        this._set({ needsCode: { message: error.message, codeWasGiven: error.codeWasGiven } });
      }
      throw error;
    }
  }

  async _device() {
    return (await this.outbox.getSetting("device")) || this.register();
  }

  async _pass() {
    const recordings = await this.outbox.recordingsToSend();
    if (!recordings.length) return;
    const device = await this._device();
    try {
      for (const recording of recordings) await this._sendRecording(recording, device);
    } catch (error) {
      if (!(error instanceof RegistrationEnded)) throw error;
      await this._registrationEnded(device, error.message);
      // Recordings not created yet go with a new registration, after the
      // usual backoff (never a tight loop of registrations).
      throw new Unreachable("registering this phone again");
    }
  }

  async _registrationEnded(device, code) {
    const current = await this.outbox.getSetting("device");
    if (current && current.device_id === device.device_id) await this.outbox.deleteSetting("device");
    const reason = {
      status: 401, error: code,
      message: "The server no longer accepts this phone's earlier registration, so recordings begun under it cannot be sent.",
    };
    for (const recording of await this.outbox.recordingsToSend()) {
      if (recording.device_id === device.device_id) await this.outbox.refuseRecording(recording.recording_id, reason);
    }
    this.onChange(this.state);
  }

  async _refuse(recording, answer) {
    await this.outbox.refuseRecording(recording.recording_id, problemOf(answer));
    this.onChange(this.state);
  }

  async _sendRecording(recording, device) {
    const id = recording.recording_id;
    if (recording.device_id && recording.device_id !== device.device_id) {
      await this._registrationEnded({ device_id: recording.device_id }, "token_expired");
      return;
    }
    if (!recording.created) {
      const answer = await this.api.authed(device, "POST", "/v1/recordings", { json: recording.body });
      if (answer.status !== 200 && answer.status !== 201) return this._refuse(recording, answer);
      await this.outbox.updateRecording(id, (r) => {
        r.created = true;
        r.device_id = device.device_id;
        r.max_chunk_bytes = answer.data.max_chunk_bytes;
      });
      if (answer.status === 200) {
        // A retry after a lost answer: the server may hold chunks whose
        // acknowledgements were lost too.
        const status = await this.api.authed(device, "GET", `/v1/recordings/${id}/status`);
        if (status.status === 200) await this.outbox.acknowledgeHeld(id, status.data.received);
      }
      this.onChange(this.state);
    }
    for (;;) {
      const piece = await this.outbox.nextPiece(id);
      if (!piece) break;
      const answer = await this._putChunk(device, piece);
      if (answer.status === 200 || answer.status === 201) {
        await this.outbox.acknowledge(id, piece.index);
        this.attempt = 0;
        this._set({ problem: null });
        continue;
      }
      if (answer.status === 404) return this._refuse(recording, answer);
      if (answer.status === 400 && answer.data && answer.data.error === "digest_mismatch") {
        // Damaged between the outbox and the server: send it again, a few times.
        const key = `${id}/${piece.index}`;
        const failures = (this.digestFailures.get(key) || 0) + 1;
        this.digestFailures.set(key, failures);
        if (failures < DIGEST_RETRIES) throw new Unreachable("a chunk arrived damaged");
      }
      await this.outbox.rejectPiece(id, piece.index, problemOf(answer));
      this.onChange(this.state);
    }
    const current = await this.outbox.getRecording(id);
    if (current.stopped && !current.completed && !(await this.outbox.waitingCount(id))) {
      if (current.abandoned) {
        // Its page died mid-recording: no final chunk exists, and the server
        // finalizes it as interrupted by itself. Nothing is left to do.
        await this.outbox.updateRecording(id, (r) => { r.completed = true; });
        this.onChange(this.state);
        return;
      }
      const answer = await this.api.authed(device, "POST", `/v1/recordings/${id}/complete`);
      if (answer.status === 202) await this.outbox.updateRecording(id, (r) => { r.completed = true; });
      else return this._refuse(current, answer);
      this.onChange(this.state);
    }
  }

  async _putChunk(device, piece) {
    const headers = {
      "Content-Type": "application/octet-stream",
      "Content-Digest": await contentDigest(piece.body),
    };
    if (piece.captured_at) headers["Witness-Captured-At"] = piece.captured_at;
    if (piece.final) headers["Witness-Final"] = "?1";
    const path = `/v1/recordings/${piece.recording_id}/chunks/${piece.index}`;
    return this.api.authed(device, "PUT", path, { body: piece.body, headers });
  }
}
