// Chunk encryption exactly as PROTOCOL.md ("Chunks") defines it, and the
// encodings the API uses. The reference is crypto/aead.py on the server.

const subtle = globalThis.crypto.subtle;
const ascii = new TextEncoder();

export const CONTENT_KEY_BYTES = 32;

/** 32 fresh random bytes: one recording's content key K. */
export function newContentKey() {
  return crypto.getRandomValues(new Uint8Array(CONTENT_KEY_BYTES));
}

/** K as a WebCrypto key that can only encrypt and cannot be exported. */
export function importContentKey(raw) {
  return subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["encrypt"]);
}

/** Nonce of chunk `index`: 4 zero bytes, then the index as 8-byte big-endian. */
export function chunkNonce(index) {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(4, BigInt(index), false);
  return nonce;
}

/** "witness/v1 chunk <recording id> <index> final|more" */
export function chunkAad(recordingId, index, final) {
  return ascii.encode(`witness/v1 chunk ${recordingId} ${index} ${final ? "final" : "more"}`);
}

/** AES-256-GCM of one piece of the recording as chunk `index`. */
export async function encryptChunk(key, recordingId, index, plaintext, final) {
  const params = { name: "AES-GCM", iv: chunkNonce(index), additionalData: chunkAad(recordingId, index, final), tagLength: 128 };
  return new Uint8Array(await subtle.encrypt(params, key, plaintext));
}

/** RFC 9530 Content-Digest of a body: "sha-256=:<base64>:". */
export async function contentDigest(body) {
  return `sha-256=:${base64(new Uint8Array(await subtle.digest("SHA-256", body)))}:`;
}

export function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

export function base64url(bytes) {
  return base64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function fromBase64url(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(text) {
  return Uint8Array.from(text.match(/../g) || [], (pair) => parseInt(pair, 16));
}
