// The workloads of `npm run bench` and what one child process does for one of them on
// one library: set up (untimed), check the results are right, warm up, time a window,
// check again, print one JSON line. Every result of a timed call is consumed.

import fs from 'node:fs'
import path from 'node:path'
import crypto from 'node:crypto'
import { PAYLOAD_BYTES, payloadFor, checkPayload, embeddedOffset } from '../payload.mjs'
import { percentiles } from '../harness.mjs'

const KiB = 1024
const GiB = 1024 ** 3

// kind: append | durable | scan | get | open | kv. unit: what `rate` counts.
export const WORKLOADS = [
  { id: 'append-100B', family: 'append', kind: 'append', bytes: 100, label: 'single append, 100 B', unit: 'records/s' },
  { id: 'append-batch-100B', family: 'append', kind: 'append', bytes: 100, batch: 1000, label: 'batched append, 1000 x 100 B', unit: 'records/s' },
  { id: 'append-1KiB', family: 'append', kind: 'append', bytes: KiB, label: 'single append, 1 KiB', unit: 'records/s' },
  { id: 'append-64KiB', family: 'append', kind: 'append', bytes: 64 * KiB, label: 'single append, 64 KiB', unit: 'records/s' },
  { id: 'durable-1', family: 'durable', kind: 'durable', durable: true, callers: 1, bytes: 100, label: 'durable append, 1 caller', unit: 'acks/s' },
  { id: 'durable-16', family: 'durable', kind: 'durable', durable: true, callers: 16, bytes: 100, label: 'durable append, 16 concurrent callers', unit: 'acks/s' },
  { id: 'durable-256', family: 'durable', kind: 'durable', durable: true, callers: 256, bytes: 100, label: 'durable append, 256 concurrent callers', unit: 'acks/s' },
  { id: 'scan', family: 'read', kind: 'scan', bytes: 100, label: 'sequential scan (seglog: CRC checked)', unit: 'records/s' },
  { id: 'get', family: 'read', kind: 'get', bytes: 100, label: 'random read by offset', unit: 'records/s' },
  { id: 'open-1GiB', family: 'open', kind: 'open', bytes: 100, label: 'open + recovery after kill -9, 1 GiB log', unit: 'ms', lowerIsBetter: true },
  { id: 'kv-put', family: 'kv', kind: 'kv', op: 'put', bytes: 100, label: 'key-value put, 16 B keys, 100 B values', unit: 'puts/s' },
  { id: 'kv-get', family: 'kv', kind: 'kv', op: 'get', bytes: 100, label: 'key-value get, random keys', unit: 'gets/s' },
]

export const workloadById = (id) => WORKLOADS.find((w) => w.id === id)

// Windows are time-bounded and capped in operations (so the fast cases do not write
// gigabytes); setup sizes are per run. `quick` is a smoke test, not for quoting.
export const SIZES = {
  full: {
    windowMs: 1500, durableWindowMs: 2000, durableWarmupMs: 500, checkRecords: 20_000,
    maxOps: { 100: 6_000_000, [KiB]: 1_000_000, [64 * KiB]: 16_384 },
    readRecords: 3_000_000, kvKeys: 1_000_000, imageBytes: GiB,
  },
  quick: {
    windowMs: 150, durableWindowMs: 200, durableWarmupMs: 50, checkRecords: 2_000,
    maxOps: { 100: 1_000_000, [KiB]: 200_000, [64 * KiB]: 2_048 },
    readRecords: 100_000, kvKeys: 50_000, imageBytes: 32 * 1024 ** 2,
  },
}

const CHUNK = 1000 // operations per step between clock reads; also the batch size and the in-flight limit
const POOL = 4096

export class Unavailable extends Error {}

function must(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`)
}

const isPromise = (x) => x !== null && typeof x === 'object' && typeof x.then === 'function'

/** Payloads of `bytes` bytes, each starting with its pool index (so reads can be checked). */
function payloadPool(bytes, count) {
  if (bytes === PAYLOAD_BYTES) return Array.from({ length: count }, (_, i) => payloadFor(i))
  return Array.from({ length: count }, (_, i) => {
    const b = crypto.randomBytes(bytes)
    b.writeUInt32LE(i, 0)
    return b
  })
}

/** A 16-character key per index, in no particular order (hex of a 64-bit mix). */
export function kvKey(i) {
  const a = Math.imul(i ^ 0x5bd1e995, 0x9e3779b1) >>> 0
  const b = Math.imul((i + 0x7f4a7c15) ^ (a >>> 15), 0x85ebca6b) >>> 0
  return a.toString(16).padStart(8, '0') + b.toString(16).padStart(8, '0')
}

/** Runs `step(done)` (CHUNK operations, sync or async) until the window or the cap ends. */
async function timedWindow(step, { windowMs, maxOps }) {
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  let ops = 0
  let value = 0
  for (;;) {
    const r = step(ops)
    value += isPromise(r) ? await r : r
    ops += CHUNK
    if (ops >= maxOps || performance.now() - t0 >= windowMs) break
  }
  const ms = performance.now() - t0
  const c = process.cpuUsage(c0)
  return { ops, ms, cpuNsPerOp: ((c.user + c.system) * 1000) / ops, value }
}

/** CHUNK calls of `call(i)`; async results are awaited together (CHUNK in flight). */
function chunked(call, async, consume) {
  if (!async) {
    return (base) => {
      let acc = 0
      for (let i = base; i < base + CHUNK; i++) acc += consume(call(i), i)
      return acc
    }
  }
  return async (base) => {
    const ps = new Array(CHUNK)
    for (let i = 0; i < CHUNK; i++) ps[i] = call(base + i)
    const rs = await Promise.all(ps)
    let acc = 0
    for (let i = 0; i < CHUNK; i++) acc += consume(rs[i], base + i)
    return acc
  }
}

function result(w, lib, m, extra = {}) {
  const rate = (m.ops / m.ms) * 1000
  return {
    workload: w.id,
    library: lib,
    ops: m.ops,
    ms: m.ms,
    rate,
    mbPerS: (rate * w.bytes) / 1e6,
    cpuNsPerOp: m.cpuNsPerOp,
    maxRssMb: process.resourceUsage().maxRSS / 1024,
    ...extra,
  }
}

// ---------------------------------------------------------------------------
// Appends (volatile)

export async function runAppend(w, libId, api, ctx) {
  const sizes = ctx.sizes
  const maxOps = sizes.maxOps[w.bytes]
  const poolSize = w.bytes === PAYLOAD_BYTES ? POOL : 64
  const pool = payloadPool(w.bytes, poolSize)
  if (libId === 'memcpy') return memcpyAppend(w, pool, maxOps, sizes)
  const log = await api.openLog(path.join(ctx.dir, 'log'), { durable: false })
  try {
    const batches = w.batch ? Array.from({ length: POOL / CHUNK }, (_, j) => pool.slice(j * CHUNK, (j + 1) * CHUNK)) : null
    const expected = (o) => (w.batch ? batches[Math.floor(o / CHUNK) % batches.length][o % CHUNK] : pool[o % poolSize])
    let step
    if (w.batch) {
      const probe = log.appendBatch(batches[0])
      const async = isPromise(probe)
      must((async ? await probe : probe) === 0, 'first batch starts at offset 0')
      step = async
        ? async (base) => (await log.appendBatch(batches[((base + CHUNK) / CHUNK) % batches.length])) === base + CHUNK ? 0 : 1
        : (base) => (log.appendBatch(batches[((base + CHUNK) / CHUNK) % batches.length]) === base + CHUNK ? 0 : 1)
    } else {
      const probe = log.append(pool[0])
      const async = isPromise(probe)
      if (!async) must(probe === 0, 'first append returns offset 0')
      else await probe
      // Sync appends return offsets: their sum must match. Async ones are checked after.
      step = chunked((i) => log.append(pool[(i + 1) % poolSize]), async, async ? () => 0 : (o, i) => (o === i + 1 ? 0 : 1))
    }
    // Warm-up doubling as a correctness check: append, read every record back, compare.
    const warm = Math.max(CHUNK, Math.min(sizes.checkRecords, maxOps / 4)) - CHUNK
    let done = 0
    for (; done < warm; done += CHUNK) must((await step(done)) === 0, `warm-up offsets at ${done}`)
    const written = done + (w.batch ? CHUNK : 1)
    must(log.nextOffset() === written, `nextOffset ${log.nextOffset()} after ${written} warm-up appends`)
    for (let o = 0; o < written; o++) {
      let v = log.get(o)
      if (isPromise(v)) v = await v
      must(v && Buffer.compare(Buffer.from(v.buffer, v.byteOffset, v.length), expected(o)) === 0, `read back record ${o}`)
    }
    const base = done
    const m = await timedWindow((k) => step(base + k), { windowMs: sizes.windowMs, maxOps })
    must(m.value === 0, `${m.value} wrong offsets in the timed window`)
    const total = written + m.ops
    must(log.nextOffset() === total, `nextOffset ${log.nextOffset()}, expected ${total}`)
    for (let i = 0; i < 200; i++) {
      const o = written + Math.floor((i * m.ops) / 200)
      let v = log.get(o)
      if (isPromise(v)) v = await v
      must(v && Buffer.compare(Buffer.from(v.buffer, v.byteOffset, v.length), expected(o)) === 0, `record ${o} after the window`)
    }
    return result(w, libId, m, { api: log.apiNotes?.[w.batch ? 'appendBatch' : 'append'], ...(log.details?.() ?? {}) })
  } finally {
    await log.close()
  }
}

/** memcpy reference: mitata's `measure` of one Buffer.copy into a prefaulted ring. */
async function memcpyAppend(w, pool, maxOps, sizes) {
  const { measure, do_not_optimize } = await import('mitata')
  const cap = Math.max(256 << 20, w.bytes * 64)
  const dst = Buffer.allocUnsafeSlow(cap)
  dst.fill(0) // prefaulted, as seglog's segments are
  let pos = 0
  let k = 0
  const copy = () => {
    if (pos + w.bytes > cap) pos = 0
    pos += pool[k++ & (pool.length - 1)].copy(dst, pos)
    return pos
  }
  for (let i = 0; i < 64; i++) copy()
  must(Buffer.compare(dst.subarray(0, w.bytes), pool[0]) === 0, 'copied bytes')
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  const stats = await measure(() => do_not_optimize(copy()), { min_cpu_time: sizes.windowMs * 1e6, max_samples: 1e9 })
  const ms = performance.now() - t0
  const c = process.cpuUsage(c0)
  must(Buffer.compare(dst.subarray(pos - w.bytes, pos), pool[(k - 1) & (pool.length - 1)]) === 0, 'last copy')
  // One operation per mitata sample at the median time per copy.
  const rate = 1e9 / stats.p50
  return {
    workload: w.id, library: 'memcpy', ops: k, ms, rate, mbPerS: (rate * w.bytes) / 1e6,
    cpuNsPerOp: ((c.user + c.system) * 1000) / k, maxRssMb: process.resourceUsage().maxRSS / 1024,
    api: 'mitata measure(Buffer.copy), median ns per copy', nsPerCopy: { p50: stats.p50, avg: stats.avg, min: stats.min, p99: stats.p99 },
  }
}

// ---------------------------------------------------------------------------
// Durable appends: C callers each awaiting one append at a time

export async function runDurable(w, libId, api, ctx) {
  const sizes = ctx.sizes
  const pool = payloadPool(w.bytes, POOL)
  const log = await api.openLog(path.join(ctx.dir, 'log'), { durable: true })
  try {
    if (typeof log.appendDurable !== 'function') throw new Unavailable('no durable append in this adapter')
    must((await log.appendDurable(pool[0])) === 0, 'first durable append returns 0')
    let issued = 1
    let acks = 0
    let wrong = 0
    let measuring = false
    const lat = []
    const caller = async (until) => {
      while (performance.now() < until) {
        const i = issued++
        const t = performance.now()
        const o = await log.appendDurable(pool[i & (POOL - 1)])
        if (o !== i) wrong++
        if (measuring) {
          lat.push(performance.now() - t)
          acks++
        }
      }
    }
    const run = (ms) => {
      const until = performance.now() + ms
      return Promise.all(Array.from({ length: w.callers }, () => caller(until)))
    }
    await run(sizes.durableWarmupMs)
    measuring = true
    const c0 = process.cpuUsage()
    const t0 = performance.now()
    await run(sizes.durableWindowMs)
    const ms = performance.now() - t0
    const c = process.cpuUsage(c0)
    must(wrong === 0, `${wrong} durable appends resolved with another offset than their call order`)
    must(log.nextOffset() === issued, `nextOffset ${log.nextOffset()}, ${issued} appended`)
    for (let i = 0; i < 100; i++) {
      const o = Math.floor((i * issued) / 100)
      let v = log.get(o)
      if (isPromise(v)) v = await v
      must(v && checkPayload(v, o & (POOL - 1)), `durable record ${o}`)
    }
    const ms99 = percentiles(lat)
    return result(w, libId, { ops: acks, ms, cpuNsPerOp: ((c.user + c.system) * 1000) / acks }, {
      ackMs: { p50: ms99.p50, p99: ms99.p99, max: ms99.max },
    })
  } finally {
    await log.close()
  }
}

// ---------------------------------------------------------------------------
// Reads on a data set written once per run (scan, get)

/** Setup child: writes `n` checkable 100 B records in batches, closes cleanly. */
export async function buildRecords(api, dir, n) {
  const log = await api.openLog(dir, { durable: false })
  const B = CHUNK
  for (let base = 0; base < n; base += B) {
    const vs = Array.from({ length: Math.min(B, n - base) }, (_, i) => payloadFor(base + i))
    const r = log.appendBatch(vs)
    must((isPromise(r) ? await r : r) === base, `setup batch at ${base}`)
  }
  must(log.nextOffset() === n, 'setup count')
  await log.close()
  return { records: n }
}

export async function runScan(w, libId, api, ctx) {
  const n = ctx.sizes.readRecords
  const log = await api.openLog(ctx.dataset, { durable: false })
  try {
    must(log.nextOffset() === n, `data set holds ${log.nextOffset()} records, expected ${n}`)
    const RANGE = 50_000
    // Warm-up and full check: the first range, byte for byte.
    let bad = 0
    let r = log.scan(0, Math.min(RANGE, n), (v, o) => {
      if (!checkPayload(v, o)) bad++
    })
    must((isPromise(r) ? await r : r) === Math.min(RANGE, n) && bad === 0, `warm-up scan, ${bad} bad`)
    let expected = 0
    const visit = (v, o) => {
      if (o !== expected || embeddedOffset(v) !== (o >>> 0)) bad++
      expected++
    }
    const c0 = process.cpuUsage()
    const t0 = performance.now()
    let ops = 0
    while (ops < n) {
      r = log.scan(ops, Math.min(ops + RANGE, n), visit)
      ops += isPromise(r) ? await r : r
      if (performance.now() - t0 >= ctx.sizes.windowMs) break
    }
    const ms = performance.now() - t0
    const c = process.cpuUsage(c0)
    must(bad === 0 && expected === ops, `timed scan: ${bad} bad of ${ops}`)
    return result(w, libId, { ops, ms, cpuNsPerOp: ((c.user + c.system) * 1000) / ops }, { api: log.apiNotes?.scan })
  } finally {
    await log.close()
  }
}

export async function runGet(w, libId, api, ctx) {
  const n = ctx.sizes.readRecords
  const log = await api.openLog(ctx.dataset, { durable: false })
  try {
    must(log.nextOffset() === n, `data set holds ${log.nextOffset()} records, expected ${n}`)
    let x = 0x2545f491 ^ ctx.trial
    const offsets = new Uint32Array(1 << 20)
    for (let i = 0; i < offsets.length; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5
      offsets[i] = (x >>> 0) % n
    }
    const mask = offsets.length - 1
    const probe = log.get(offsets[0])
    const async = isPromise(probe)
    if (async) await probe
    // Warm-up and full check on the last offsets of the table (the window starts at the first).
    for (let i = 0; i < ctx.sizes.checkRecords; i++) {
      const o = offsets[mask - i]
      let v = log.get(o)
      if (async) v = await v
      must(v && checkPayload(v, o), `get(${o})`)
    }
    const step = chunked((i) => log.get(offsets[i & mask]), async, (v, i) => (v && embeddedOffset(v) === offsets[i & mask] ? 0 : 1))
    const m = await timedWindow(step, { windowMs: ctx.sizes.windowMs, maxOps: ctx.sizes.maxOps[100] })
    must(m.value === 0, `${m.value} wrong records in the timed window`)
    return result(w, libId, m, { api: log.apiNotes?.get })
  } finally {
    await log.close()
  }
}

// ---------------------------------------------------------------------------
// Open and recovery of a 1 GiB log left by kill -9

/** Setup child: writes `bytes` of 100 B payloads, records the count, then SIGKILLs itself. */
export async function buildImage(api, dir, bytes) {
  const log = await api.openLog(dir, { durable: false })
  const n = Math.ceil(bytes / PAYLOAD_BYTES)
  const pool = payloadPool(PAYLOAD_BYTES, POOL)
  for (let base = 0; base < n; base += CHUNK) {
    const vs = Array.from({ length: Math.min(CHUNK, n - base) }, (_, i) => pool[(base + i) % POOL])
    const r = log.appendBatch(vs)
    if (isPromise(r)) await r
  }
  must(log.nextOffset() === n, 'image count')
  fs.writeFileSync(path.join(dir, '..', `${path.basename(dir)}.json`), JSON.stringify({ records: n, payloadBytes: n * PAYLOAD_BYTES }))
  process.kill(process.pid, 'SIGKILL')
}

export async function runOpen(w, libId, api, ctx) {
  const { records } = JSON.parse(fs.readFileSync(`${ctx.image}.json`, 'utf8'))
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  const log = await api.openLog(ctx.dir, { durable: false })
  const next = log.nextOffset()
  const ms = performance.now() - t0
  const c = process.cpuUsage(c0)
  try {
    // Appends still in a user-space buffer at the kill are lost (the hand-rolled file's
    // 1 MiB staging buffer, the pure-JS engine's current tick); none may appear from nowhere.
    must(next <= records && next >= records * 0.9, `recovered ${next} records, ${records} were written`)
    let v = log.get(next - 1)
    if (isPromise(v)) v = await v
    must(v && checkPayload(v, (next - 1) % POOL), 'last record after recovery')
    const diskMb = diskMegabytes(ctx.dir)
    return {
      workload: w.id, library: libId, ops: 1, ms, rate: ms, cpuMs: (c.user + c.system) / 1000,
      records: next, recordsLost: records - next, diskMb, maxRssMb: process.resourceUsage().maxRSS / 1024, ...(log.details?.() ?? {}),
    }
  } finally {
    await log.close()
  }
}

/** Megabytes the files under `dir` occupy on disk. */
function diskMegabytes(dir) {
  let total = 0
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) walk(p)
      else total += fs.statSync(p).blocks * 512
    }
  }
  walk(dir)
  return +(total / 1e6).toFixed(1)
}

// ---------------------------------------------------------------------------
// Key-value

export async function buildKv(api, dir, n) {
  const kv = await api.openKv(dir)
  const keys = Array.from({ length: n }, (_, i) => kvKey(i))
  const values = Array.from({ length: n }, (_, i) => payloadFor(i))
  for (let base = 0; base < n; base += CHUNK) {
    const r = kv.putMany(keys, values, base, Math.min(CHUNK, n - base))
    if (isPromise(r)) await r
  }
  await kv.close()
  return { keys: n }
}

export async function runKv(w, libId, api, ctx) {
  const n = ctx.sizes.kvKeys
  const keys = Array.from({ length: n }, (_, i) => kvKey(i))
  if (w.op === 'put') {
    const maxOps = Math.min(n, ctx.sizes.maxOps[100])
    const values = Array.from({ length: n }, (_, i) => payloadFor(i))
    const kv = await api.openKv(path.join(ctx.dir, 'kv'))
    try {
      const warm = Math.min(ctx.sizes.checkRecords, n / 4)
      for (let base = 0; base < warm; base += CHUNK) {
        const r = kv.putMany(keys, values, base, CHUNK)
        if (isPromise(r)) await r
      }
      for (let i = 0; i < warm; i++) {
        let v = kv.get(keys[i])
        if (isPromise(v)) v = await v
        must(v && checkPayload(v, i), `get after put, key ${i}`)
      }
      const base = warm
      const step = (k) => {
        const r = kv.putMany(keys, values, base + k, CHUNK)
        return isPromise(r) ? r.then(() => 0) : 0
      }
      const m = await timedWindow(step, { windowMs: ctx.sizes.windowMs, maxOps: maxOps - warm })
      for (let i = 0; i < 200; i++) {
        const k = base + Math.floor((i * m.ops) / 200)
        let v = kv.get(keys[k])
        if (isPromise(v)) v = await v
        must(v && checkPayload(v, k), `key ${k} after the window`)
      }
      return result(w, libId, m, { api: kv.apiNotes?.put ?? 'put() per call' })
    } finally {
      await kv.close()
    }
  }
  const kv = await api.openKv(ctx.dataset)
  try {
    const picks = new Uint32Array(1 << 20)
    let x = 0x1b873593 ^ ctx.trial
    for (let i = 0; i < picks.length; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5
      picks[i] = (x >>> 0) % n
    }
    const mask = picks.length - 1
    const probe = kv.get(keys[picks[0]])
    const async = isPromise(probe)
    if (async) await probe
    for (let i = 0; i < ctx.sizes.checkRecords; i++) {
      const k = picks[mask - i]
      let v = kv.get(keys[k])
      if (async) v = await v
      must(v && checkPayload(v, k), `get key ${k}`)
    }
    let missing
    missing = kv.get('zzzzzzzzzzzzzzzz')
    if (isPromise(missing)) missing = await missing.catch(() => undefined)
    must(missing === undefined || missing === null, 'a missing key reads as absent')
    const step = chunked((i) => kv.get(keys[picks[i & mask]]), async, (v, i) => (v && embeddedOffset(v) === picks[i & mask] ? 0 : 1))
    const m = await timedWindow(step, { windowMs: ctx.sizes.windowMs, maxOps: ctx.sizes.maxOps[100] })
    must(m.value === 0, `${m.value} wrong values in the timed window`)
    return result(w, libId, m, { api: kv.apiNotes?.get ?? 'get()' })
  } finally {
    await kv.close()
  }
}
