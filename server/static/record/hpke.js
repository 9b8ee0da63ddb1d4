// HPKE (RFC 9180), base mode, single-shot seal, with WebCrypto alone:
// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-GCM. Enough to seal a
// recording's content key to the server, as PROTOCOL.md ("Recordings") says:
// sealed = enc || ciphertext, info = "witness/v1 recording-key " + recording_id.
//
// Checked in tests/pages/test_hpke.py against RFC 9180's Appendix A.1 vector
// and against the server's own HPKE (crypto/aead.py), both ways of failing
// included. Nothing else here is needed by the page than sealContentKey.

import { base64url } from "./chunks.js";

const subtle = globalThis.crypto.subtle;
const utf8 = new TextEncoder();

const KEM_ID = 0x0020; // DHKEM(X25519, HKDF-SHA256)
const KDF_ID = 0x0001; // HKDF-SHA256
const HASH_BYTES = 32; // Nh of HKDF-SHA256, and Nsecret of the KEM
const NONCE_BYTES = 12; // Nn of AES-GCM
const MODE_BASE = 0x00;

/** The AEADs of RFC 9180 section 7.3 that WebCrypto has. */
export const AEAD = Object.freeze({
  AES_128_GCM: Object.freeze({ id: 0x0001, keyBytes: 16 }),
  AES_256_GCM: Object.freeze({ id: 0x0002, keyBytes: 32 }),
});

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function i2osp(value, width) {
  const out = new Uint8Array(width);
  for (let i = width - 1; i >= 0; i -= 1) {
    out[i] = value & 0xff;
    value >>>= 8;
  }
  return out;
}

async function hmacSha256(key, data) {
  // RFC 5869: an absent salt is HashLen zero bytes, which HMAC pads to the
  // same block as an empty key; WebCrypto refuses a zero-length HMAC key.
  const keyBytes = key.length ? key : new Uint8Array(HASH_BYTES);
  const hmacKey = await subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", hmacKey, data));
}

async function hkdfExpand(prk, info, length) {
  if (length > 255 * HASH_BYTES) throw new RangeError("HKDF-Expand: too long");
  let block = new Uint8Array(0);
  const out = new Uint8Array(length);
  for (let i = 1, at = 0; at < length; i += 1) {
    block = await hmacSha256(prk, concat(block, info, Uint8Array.of(i)));
    out.set(block.subarray(0, Math.min(block.length, length - at)), at);
    at += block.length;
  }
  return out;
}

function labeledExtract(suiteId, salt, label, ikm) {
  return hmacSha256(salt, concat(utf8.encode("HPKE-v1"), suiteId, utf8.encode(label), ikm));
}

function labeledExpand(suiteId, prk, label, info, length) {
  const labeledInfo = concat(i2osp(length, 2), utf8.encode("HPKE-v1"), suiteId, utf8.encode(label), info);
  return hkdfExpand(prk, labeledInfo, length);
}

const KEM_SUITE_ID = concat(utf8.encode("KEM"), i2osp(KEM_ID, 2));

function hpkeSuiteId(aead) {
  return concat(utf8.encode("HPKE"), i2osp(KEM_ID, 2), i2osp(KDF_ID, 2), i2osp(aead.id, 2));
}

async function newEphemeral() {
  const pair = await subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
  return { privateKey: pair.privateKey, publicKey: new Uint8Array(await subtle.exportKey("raw", pair.publicKey)) };
}

/**
 * A fixed ephemeral key pair (raw 32-byte skEm and pkEm), for the RFC's test
 * vectors only: reusing an ephemeral key breaks HPKE's confidentiality.
 */
export async function ephemeralForTests(skEm, pkEm) {
  const jwk = { kty: "OKP", crv: "X25519", d: base64url(skEm), x: base64url(pkEm) };
  const privateKey = await subtle.importKey("jwk", jwk, { name: "X25519" }, false, ["deriveBits"]);
  return { privateKey, publicKey: Uint8Array.from(pkEm) };
}

// RFC 9180 section 4.1: Encap(pkR) of DHKEM(X25519, HKDF-SHA256).
async function encap(pkR, ephemeral) {
  const recipient = await subtle.importKey("raw", pkR, { name: "X25519" }, false, []);
  const dh = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: recipient }, ephemeral.privateKey, 256));
  // RFC 7748 section 6.1: a low-order public key gives all zeros; refuse it.
  if (dh.every((byte) => byte === 0)) throw new Error("HPKE: the recipient's public key is invalid");
  const enc = ephemeral.publicKey;
  const eaePrk = await labeledExtract(KEM_SUITE_ID, new Uint8Array(0), "eae_prk", dh);
  const sharedSecret = await labeledExpand(KEM_SUITE_ID, eaePrk, "shared_secret", concat(enc, pkR), HASH_BYTES);
  return { enc, sharedSecret };
}

/**
 * SetupBaseS(pkR, info) of RFC 9180 sections 5.1 and 5.1.1. Returns the
 * context's values (for the vector tests) and `seal(aad, plaintext)` for
 * its first message (sequence number 0), which is all single-shot needs.
 * `ephemeral` is for the test vectors only.
 */
export async function setupBaseSender(pkR, info, { aead = AEAD.AES_256_GCM, ephemeral = null } = {}) {
  if (!(pkR instanceof Uint8Array) || pkR.length !== 32) throw new TypeError("HPKE: pkR must be 32 bytes");
  const { enc, sharedSecret } = await encap(pkR, ephemeral || (await newEphemeral()));
  const suiteId = hpkeSuiteId(aead);
  const empty = new Uint8Array(0);
  const pskIdHash = await labeledExtract(suiteId, empty, "psk_id_hash", empty);
  const infoHash = await labeledExtract(suiteId, empty, "info_hash", info);
  const keyScheduleContext = concat(Uint8Array.of(MODE_BASE), pskIdHash, infoHash);
  const secret = await labeledExtract(suiteId, sharedSecret, "secret", empty);
  const key = await labeledExpand(suiteId, secret, "key", keyScheduleContext, aead.keyBytes);
  const baseNonce = await labeledExpand(suiteId, secret, "base_nonce", keyScheduleContext, NONCE_BYTES);
  const exporterSecret = await labeledExpand(suiteId, secret, "exp", keyScheduleContext, HASH_BYTES);
  const aesKey = await subtle.importKey("raw", key, { name: "AES-GCM" }, false, ["encrypt"]);
  let used = false;
  return {
    enc, sharedSecret, keyScheduleContext, secret, key, baseNonce, exporterSecret,
    async seal(aad, plaintext) {
      // Sequence number 0: the nonce is base_nonce itself. A second message
      // would need the sequence counter; single-shot never sends one.
      if (used) throw new Error("HPKE: this context seals one message only");
      used = true;
      const sealed = await subtle.encrypt({ name: "AES-GCM", iv: baseNonce, additionalData: aad, tagLength: 128 }, aesKey, plaintext);
      return new Uint8Array(sealed);
    },
  };
}

/** Single-shot Seal (RFC 9180 section 6.1): enc || ciphertext. */
export async function sealBase(pkR, info, aad, plaintext, options = {}) {
  const context = await setupBaseSender(pkR, info, options);
  return concat(context.enc, await context.seal(aad, plaintext));
}

/**
 * Seal a recording's 32-byte content key to the server's HPKE public key
 * (raw 32 bytes from GET /v1/keys), bound to the recording id. Returns the
 * 80 bytes PROTOCOL.md calls `sealed_key`.
 */
export async function sealContentKey(serverPublicKey, recordingId, contentKey) {
  if (contentKey.length !== 32) throw new TypeError("a content key is 32 bytes");
  const info = utf8.encode(`witness/v1 recording-key ${recordingId}`);
  return sealBase(serverPublicKey, info, new Uint8Array(0), contentKey, { aead: AEAD.AES_256_GCM });
}
