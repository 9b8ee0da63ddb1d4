// The outbox: everything the page must not lose, in IndexedDB, written
// before any upload is tried. A killed or reloaded page finds it again.
//
//   settings    "device" -> {device_id, access_token, refresh_token}
//               "keys"   -> the `hpke` part of GET /v1/keys
//   recordings  recording_id -> {recording_id, body (the POST /v1/recordings
//               body), started_at, next_index, stopped, abandoned (its page
//               died while recording), device_id (once the server took it),
//               created, acked, completed, refused}
//   pieces      [recording_id, index] -> {recording_id, index, body (the
//               chunk's ciphertext), final, captured_at}
//   rejected    the same key -> a piece the server refused for good, with
//               `reason`: kept, never sent again (not deleted: it is footage)
//
// Only ciphertext is stored: the content key K never touches the disk.

const DB_NAME = "witness-recorder";
const DB_VERSION = 1;

function promised(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function done(transaction) {
  return new Promise((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error || new DOMException("aborted", "AbortError"));
  });
}

function piecesOf(recordingId) {
  return IDBKeyRange.bound([recordingId, 0], [recordingId, Number.MAX_SAFE_INTEGER]);
}

export class Outbox {
  static async open() {
    const request = indexedDB.open(DB_NAME, DB_VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      db.createObjectStore("settings");
      db.createObjectStore("recordings", { keyPath: "recording_id" });
      db.createObjectStore("pieces", { keyPath: ["recording_id", "index"] });
      db.createObjectStore("rejected", { keyPath: ["recording_id", "index"] });
    };
    return new Outbox(await promised(request));
  }

  constructor(db) {
    this.db = db;
  }

  async _run(stores, mode, work) {
    const transaction = this.db.transaction(stores, mode, { durability: "strict" });
    const finished = done(transaction);
    let result;
    try {
      result = await work(transaction);
    } catch (error) {
      // All or nothing: writes the work made before failing must not commit.
      try { transaction.abort(); } catch { /* already finished */ }
      finished.catch(() => {});
      throw error;
    }
    await finished;
    return result;
  }

  getSetting(name) {
    return this._run(["settings"], "readonly", (t) => promised(t.objectStore("settings").get(name)));
  }

  setSetting(name, value) {
    return this._run(["settings"], "readwrite", (t) => promised(t.objectStore("settings").put(value, name)));
  }

  deleteSetting(name) {
    return this._run(["settings"], "readwrite", (t) => promised(t.objectStore("settings").delete(name)));
  }

  /** A new recording and its pending POST /v1/recordings body. */
  addRecording(body) {
    const recording = {
      recording_id: body.recording_id, body, started_at: body.started_at, next_index: 0, stopped: false,
      abandoned: false, device_id: null, created: false, acked: 0, completed: false, refused: null,
    };
    return this._run(["recordings"], "readwrite", (t) => promised(t.objectStore("recordings").add(recording)));
  }

  getRecording(recordingId) {
    return this._run(["recordings"], "readonly", (t) => promised(t.objectStore("recordings").get(recordingId)));
  }

  /** Change a recording with `change(recording)` inside one transaction. */
  updateRecording(recordingId, change) {
    return this._run(["recordings"], "readwrite", async (t) => {
      const store = t.objectStore("recordings");
      const recording = await promised(store.get(recordingId));
      if (!recording) return null;
      change(recording);
      store.put(recording);
      return recording;
    });
  }

  /** Recordings with something left to do, oldest first. */
  async recordingsToSend() {
    const all = await this._run(["recordings"], "readonly", (t) => promised(t.objectStore("recordings").getAll()));
    return all.filter((r) => !r.completed && !r.refused).sort((a, b) => a.started_at.localeCompare(b.started_at));
  }

  async latestRecording() {
    const all = await this._run(["recordings"], "readonly", (t) => promised(t.objectStore("recordings").getAll()));
    return all.sort((a, b) => b.started_at.localeCompare(a.started_at))[0] || null;
  }

  /**
   * Store the next piece's ciphertext and advance the recording's counter in
   * one transaction; `stopped` also marks the recording as stopped (its
   * final piece). Returns once the browser says it is durable.
   */
  addPiece(piece, { stopped = false } = {}) {
    return this._run(["recordings", "pieces", "rejected"], "readwrite", async (t) => {
      const recordings = t.objectStore("recordings");
      const recording = await promised(recordings.get(piece.recording_id));
      recording.next_index = piece.index + 1;
      if (stopped) recording.stopped = true;
      recordings.put(recording);
      // A recording the server already refused keeps its pieces aside too.
      if (recording.refused) t.objectStore("rejected").put({ ...piece, reason: recording.refused });
      else t.objectStore("pieces").add(piece);
    });
  }

  /** The lowest-index piece of a recording still to be sent. */
  nextPiece(recordingId) {
    return this._run(["pieces"], "readonly", async (t) => {
      const cursor = await promised(t.objectStore("pieces").openCursor(piecesOf(recordingId)));
      return cursor ? cursor.value : null;
    });
  }

  /**
   * The server answered 200/201 for this piece: delete it and count it as
   * safe, once (another tab may have sent it too).
   */
  acknowledge(recordingId, index) {
    return this._run(["recordings", "pieces"], "readwrite", async (t) => {
      const pieces = t.objectStore("pieces");
      if (!(await promised(pieces.count([recordingId, index])))) return;
      pieces.delete([recordingId, index]);
      const recordings = t.objectStore("recordings");
      const recording = await promised(recordings.get(recordingId));
      recording.acked += 1;
      recordings.put(recording);
    });
  }

  /**
   * The server already holds these indexes (its status after a lost answer):
   * drop them from the outbox and count them.
   */
  acknowledgeHeld(recordingId, heldRanges) {
    return this._run(["recordings", "pieces"], "readwrite", async (t) => {
      const pieces = t.objectStore("pieces");
      const keys = await promised(pieces.getAllKeys(piecesOf(recordingId)));
      let dropped = 0;
      for (const [, index] of keys) {
        if (heldRanges.some(([first, last]) => index >= first && index <= last)) {
          pieces.delete([recordingId, index]);
          dropped += 1;
        }
      }
      const recordings = t.objectStore("recordings");
      const recording = await promised(recordings.get(recordingId));
      recording.acked = Math.max(recording.acked + dropped, heldRanges.reduce((n, [a, b]) => n + b - a + 1, 0));
      recordings.put(recording);
    });
  }

  /** The server refused this piece for good: keep it aside, never send it again. */
  rejectPiece(recordingId, index, reason) {
    return this._run(["pieces", "rejected"], "readwrite", async (t) => {
      const pieces = t.objectStore("pieces");
      const piece = await promised(pieces.get([recordingId, index]));
      if (!piece) return;
      t.objectStore("rejected").put({ ...piece, reason });
      pieces.delete([recordingId, index]);
    });
  }

  /** A recording the server refused for good: set its pieces aside too. */
  refuseRecording(recordingId, reason) {
    return this._run(["recordings", "pieces", "rejected"], "readwrite", async (t) => {
      const pieces = t.objectStore("pieces");
      const rejected = t.objectStore("rejected");
      for (const piece of await promised(pieces.getAll(piecesOf(recordingId)))) rejected.put({ ...piece, reason });
      pieces.delete(piecesOf(recordingId));
      const recordings = t.objectStore("recordings");
      const recording = await promised(recordings.get(recordingId));
      recording.refused = reason;
      recordings.put(recording);
    });
  }

  /** Pieces waiting to be sent, for one recording or all (counts keys only). */
  waitingCount(recordingId = null) {
    return this._run(["pieces"], "readonly", (t) => promised(t.objectStore("pieces").count(recordingId ? piecesOf(recordingId) : undefined)));
  }

  /** Pieces the server refused, for all recordings. */
  rejectedCount() {
    return this._run(["rejected"], "readonly", (t) => promised(t.objectStore("rejected").count()));
  }
}
