// The deterministic workload shared by the crash-test writer (a child process) and the
// test that checks what survived: payloads and timestamps are functions of the offset,
// and the sequence of append/appendBatch calls is a function of a seed.

/** 8-byte little-endian offset, then 1 + (offset * 7919 % 3000) pattern bytes. */
export function payloadFor(offset) {
  const len = 8 + 1 + ((offset * 7919) % 3000)
  const buf = Buffer.allocUnsafe(len)
  buf.writeBigUInt64LE(BigInt(offset), 0)
  for (let i = 8; i < len; i++) buf[i] = (offset * 13 + i * 31 + 1) & 0xff
  return buf
}

const TIMESTAMP_BASE_MS = 1_600_000_000_000

/** The explicit timestamp given to the call that starts at `firstOffset`. */
export function timestampFor(firstOffset) {
  return TIMESTAMP_BASE_MS + firstOffset
}

/** mulberry32: a small seeded PRNG returning floats in [0, 1). */
export function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * The writer's calls, in order: `{ batch: false, count: 1 }` for `append`, or
 * `{ batch: true, count }` (1..24 records) for `appendBatch`. Infinite.
 */
export function* callPlan(seed) {
  const random = prng(seed)
  for (;;) {
    if (random() < 0.5) yield { batch: false, count: 1 }
    else yield { batch: true, count: 1 + Math.floor(random() * 24) }
  }
}
