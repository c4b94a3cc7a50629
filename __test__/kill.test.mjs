// Guards against losing or inventing records when the writer process dies mid-append
// (SIGKILL, the OOM killer). The page cache outlives the process, so every record whose
// append/appendBatch returned must be there after reopen, byte-identical; offsets must be
// contiguous from 0; nothing may be returned that was never written; a batch is all or
// nothing; and the recovered log must accept appends that survive another reopen.
// Reproduce a run with SEGLOG_KILL_SEED=<seed printed in the log>; more iterations with
// SEGLOG_KILL_ITERATIONS.
import crypto from 'node:crypto'
import fs from 'node:fs'

import test from 'ava'

import { Log } from '../dist/index.mjs'
import { callPlan, payloadFor, prng, timestampFor } from './helpers/payload.mjs'
import { spawnFixture, tempDir } from './helpers/temp.mjs'

const SEGMENT_BYTES = 256 << 10
const ITERATIONS = Number(process.env.SEGLOG_KILL_ITERATIONS ?? 24)
const BASE_SEED = Number(process.env.SEGLOG_KILL_SEED ?? crypto.randomInt(2 ** 31))

/** The offsets where the plan's calls start, up to `limit`: first offset -> record count. */
function callStarts(seed, limit) {
  const starts = new Map()
  let next = 0
  for (const call of callPlan(seed)) {
    if (next > limit) break
    starts.set(next, call.count)
    next += call.count
  }
  return starts
}

/**
 * Runs the writer child with `seed`, SIGKILLs it once it has acknowledged `killAfter`
 * records (plus a random short delay), and returns how many offsets it acknowledged.
 */
async function runAndKill(t, dir, seed, killAfter, delayMs) {
  const child = spawnFixture(t, 'writer.mjs', [dir, String(seed)])
  let acked = 0
  let partial = ''
  let killed = false
  let outOfOrder
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk) => {
    const lines = (partial + chunk).split('\n')
    partial = lines.pop()
    for (const line of lines) {
      if (line === 'done') continue
      if (Number(line) !== acked && outOfOrder === undefined) outOfOrder = `line ${JSON.stringify(line)} where offset ${acked} was expected`
      acked++
    }
    if (!killed && acked >= killAfter) {
      killed = true
      if (delayMs === 0) child.kill('SIGKILL')
      else setTimeout(() => child.kill('SIGKILL'), delayMs)
    }
  })
  const { code, signal } = await child.exited
  t.is(signal, 'SIGKILL', `the writer died of SIGKILL, not on its own (code ${code}): ${child.stderrText}`)
  t.is(outOfOrder, undefined, 'the writer acknowledged offsets 0, 1, 2, ... in order')
  return acked
}

async function checkRecovered(t, dir, seed, acked, where) {
  const log = await Log.open(dir, { segmentBytes: SEGMENT_BYTES })
  try {
    const n = log.nextOffset
    t.true(n >= acked, `${where}: nextOffset ${n} holds all ${acked} acknowledged records`)
    t.is(log.firstOffset, 0, where)
    const starts = callStarts(seed, n)
    t.true(starts.has(n), `${where}: the log ends on a call boundary (${n}), so no batch is half there`)

    // Every record, acknowledged or not, must be exactly what the writer wrote there.
    let expectedOffset = 0
    let timestamp
    let bad = 0
    for (const r of log.records()) {
      if (starts.has(r.offset)) timestamp = timestampFor(r.offset)
      const ok = r.offset === expectedOffset && r.timestamp === timestamp && Buffer.compare(Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength), payloadFor(r.offset)) === 0
      if (!ok && bad++ < 5) t.fail(`${where}: record ${r.offset} (expected ${expectedOffset}) differs from what was written`)
      expectedOffset++
    }
    t.is(expectedOffset, n, `${where}: records() yields offsets 0..nextOffset-1`)
    t.is(bad, 0, `${where}: every record matches its deterministic payload and timestamp`)
    // Spot checks through get (index lookups), including the last acknowledged record.
    for (const o of [0, Math.floor(acked / 2), acked - 1, n - 1]) {
      if (o < 0 || o >= n) continue
      t.deepEqual(Buffer.from(log.get(o).value), payloadFor(o), `${where}: get(${o})`)
    }
    t.is(log.get(n), undefined)

    const segments = log.segments()
    t.is(segments[0].baseOffset, 0)
    for (let i = 1; i < segments.length; i++) t.is(segments[i].baseOffset, segments[i - 1].nextOffset, `${where}: segments contiguous`)
    t.is(segments.at(-1).nextOffset, n)
    const report = await log.verify()
    t.true(report.ok, `${where}: verify ${JSON.stringify(report.problem)}`)
    t.is(report.records, n)

    // The recovered log takes new appends, and they survive a clean reopen.
    t.is(log.append(payloadFor(n), timestampFor(n)), n)
    t.is(log.appendBatch([payloadFor(n + 1), payloadFor(n + 2)], timestampFor(n + 1)), n + 1)
    await log.close()
    const again = await Log.open(dir, { segmentBytes: SEGMENT_BYTES })
    try {
      t.is(again.recovery.truncation, undefined, `${where}: a clean reopen after recovery cuts nothing`)
      t.is(again.nextOffset, n + 3)
      for (const o of [n, n + 1, n + 2]) t.deepEqual(Buffer.from(again.get(o).value), payloadFor(o), `${where}: get(${o}) after the second reopen`)
      if (acked > 0) t.deepEqual(Buffer.from(again.get(acked - 1).value), payloadFor(acked - 1), `${where}: the last acknowledged record after the second reopen`)
      t.true((await again.verify()).ok)
    } finally {
      await again.close()
    }
    return { n, segments: segments.length, truncation: log.recovery.truncation }
  } finally {
    await log.close()
  }
}

test(`SIGKILL while appending, ${ITERATIONS} times: every acknowledged record survives, byte-identical and contiguous`, async (t) => {
  t.log(`base seed ${BASE_SEED} (SEGLOG_KILL_SEED to repeat)`)
  const random = prng(BASE_SEED)
  let truncations = 0
  let maxSegments = 0
  for (let i = 0; i < ITERATIONS; i++) {
    const seed = (BASE_SEED + i * 7919) >>> 0
    const killAfter = 1 + Math.floor(random() * 6000)
    const delayMs = random() < 0.5 ? 0 : Math.floor(random() * 20)
    const dir = tempDir(t)
    const where = `iteration ${i} (seed ${seed}, kill after ${killAfter} acks + ${delayMs} ms)`
    const acked = await runAndKill(t, dir, seed, killAfter, delayMs)
    t.true(acked >= killAfter, `${where}: the parent saw ${acked} acknowledgements before the kill`)
    const { n, segments, truncation } = await checkRecovered(t, dir, seed, acked, where)
    if (truncation) truncations++
    maxSegments = Math.max(maxSegments, segments)
    t.log(`${where}: acked ${acked}, recovered ${n}, ${segments} segments${truncation ? `, cut: ${truncation.reason}` : ''}`)
    fs.rmSync(dir, { recursive: true, force: true }) // keep at most one iteration's files on disk
  }
  t.log(`${truncations} of ${ITERATIONS} recoveries cut a torn tail; up to ${maxSegments} segments`)
  t.true(maxSegments > 1, 'the writer rolled to new segments')
})
