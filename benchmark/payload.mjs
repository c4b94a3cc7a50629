// Deterministic 100-byte payloads derived from a record's offset, cheap to write and
// to check byte for byte (shared by demo.mjs and log-throughput.mjs).
//
// Layout of the payload for offset o:
//   bytes 0..7    o as a little-endian u64 (two u32 halves)
//   bytes 8..99   PATTERN[k .. k + 92], k = mix(o) mod (PATTERN_BYTES - 92)
// PATTERN is 1 MiB of xorshift32 output from a fixed seed, so every payload is
// pseudo-random, distinct per offset, and checkable with one Buffer.compare.
// Values read back may be Buffers or plain Uint8Arrays (iteration returns views), so
// nothing here calls Buffer methods on them.

export const PAYLOAD_BYTES = 100
const TAIL = PAYLOAD_BYTES - 8
const PATTERN_BYTES = 1 << 20
const SPAN = PATTERN_BYTES - TAIL
const TWO_32 = 4294967296

export const PATTERN = (() => {
  const words = new Uint32Array(PATTERN_BYTES / 4)
  let x = 0x9e3779b9
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    words[i] = x >>> 0
  }
  return Buffer.from(words.buffer)
})()

function patternStart(offset) {
  return ((Math.imul(offset >>> 0, 0x9e3779b1) ^ Math.floor(offset / TWO_32)) >>> 0) % SPAN
}

/** Writes the payload for `offset` into `buf` at `pos`. */
export function fillPayload(buf, pos, offset) {
  buf.writeUInt32LE(offset >>> 0, pos)
  buf.writeUInt32LE(Math.floor(offset / TWO_32), pos + 4)
  const k = patternStart(offset)
  PATTERN.copy(buf, pos + 8, k, k + TAIL)
}

/** A fresh Buffer holding the payload for `offset`. */
export function payloadFor(offset) {
  const b = Buffer.allocUnsafe(PAYLOAD_BYTES)
  fillPayload(b, 0, offset)
  return b
}

/** The offset a payload claims (its first 4 bytes, little-endian); works on any Uint8Array. */
export function embeddedOffset(v) {
  return (v[0] | (v[1] << 8) | (v[2] << 16) | (v[3] << 24)) >>> 0
}

/** True when `value` (any Uint8Array) is exactly the payload for `offset`. */
export function checkPayload(value, offset) {
  if (value.length !== PAYLOAD_BYTES) return false
  if (embeddedOffset(value) !== offset >>> 0) return false
  const hi = Math.floor(offset / TWO_32)
  if ((value[4] | (value[5] << 8) | (value[6] << 16) | (value[7] << 24)) >>> 0 !== hi) return false
  const k = patternStart(offset)
  return PATTERN.compare(value, 8, PAYLOAD_BYTES, k, k + TAIL) === 0
}
