// Guards the promise the durability modes make to a writer that dies: a child process
// (fixtures/durable-writer.mjs) appends and reports every ACKNOWLEDGED call to us; we
// SIGKILL it at a random moment (some before it acknowledged anything, even before the
// log was open) and reopen the log. Every acknowledged record must be there,
// byte-identical; every record there must be exactly what the writer wrote at that
// offset (nothing invented, batches all or nothing); offsets must be contiguous from 0;
// verify() must pass; and the recovered log must take appends that survive another reopen.
// - 'sync': acknowledged = appendDurable / appendBatchDurable / sync() resolved, with
//   1..64 callers in flight sharing group-commit syncs.
// - 'none': acknowledged = append / appendBatch returned (the page cache outlives the
//   process), with unawaited syncs running now and then.
// A process kill cannot lose the page cache, so this does not prove the fsyncs happen
// (durability.test.mjs and the engine's own tests cover that); it proves that group
// commit, syncs racing appends, rolls and recovery never lose or invent a record.
//
// SEGLOG_CRASH_ITERATIONS per mode (default 50; `npm run test:crash` runs 1000).
// SEGLOG_CRASH_SEED=<seed> repeats a run; iteration i uses seed + i * 7919, and every
// choice of an iteration (workload, kill moment) is a function of its own seed, so
// SEGLOG_CRASH_SEED=<an iteration's seed> SEGLOG_CRASH_ITERATIONS=1 repeats just that one
// (kill timing is real time, so the exact kill point can still differ).
// SEGLOG_CRASH_CONCURRENCY iterations run at once per mode (default 3: the children spend
// much of their time waiting for fsync, so 3 keep 2 cores busy);
// SEGLOG_CRASH_VERBOSE=1 logs every iteration.
import crypto from 'node:crypto'
import fs from 'node:fs'

import test from 'ava'

import { Log } from '../dist/index.mjs'
import { callPlan, payloadFor, prng, timestampFor } from './helpers/payload.mjs'
import { spawnFixture, tempDir } from './helpers/temp.mjs'

const SEGMENT_BYTES = 256 << 10 // the writer's default (SEGLOG_WRITER_SEGMENT_BYTES)
const ITERATIONS = Number(process.env.SEGLOG_CRASH_ITERATIONS ?? 50)
const BASE_SEED = Number(process.env.SEGLOG_CRASH_SEED ?? crypto.randomInt(2 ** 31)) >>> 0
const CONCURRENCY = Math.max(1, Number(process.env.SEGLOG_CRASH_CONCURRENCY ?? 3))
const VERBOSE = process.env.SEGLOG_CRASH_VERBOSE === '1'
/** Problems reported per iteration before the rest are summarised. */
const MAX_PROBLEMS = 8
/** A writer that has not reached its kill point by then is stuck: kill it and fail. */
const STUCK_MS = 30_000

/** First offset of each call of callPlan(seed) -> its record count, computed as needed. */
class CallStarts {
  #plan
  #next = 0
  #starts = new Map()
  constructor(seed) {
    this.#plan = callPlan(seed)
  }
  #extend(offset) {
    while (this.#next <= offset) {
      const { count } = this.#plan.next().value
      this.#starts.set(this.#next, count)
      this.#next += count
    }
  }
  /** The record count of the call starting at `offset`, or undefined if none starts there. */
  get(offset) {
    this.#extend(offset)
    return this.#starts.get(offset)
  }
  has(offset) {
    return this.get(offset) !== undefined
  }
}

/** How iteration `seed` kills its writer: a function of the seed alone. */
function killPlan(seed) {
  const random = prng((seed ^ 0x85ebca6b) >>> 0)
  const r = random()
  // Some kills land at a random moment after the spawn: often before the log is even
  // open, sometimes while it is created or recovered, sometimes among the first appends.
  if (r < 0.1) return { trigger: 'spawn', delayMs: Math.floor(random() * 150) }
  // Right when the log is open, before (or just as) the first acknowledgement.
  if (r < 0.2) return { trigger: 'ready', delayMs: random() < 0.5 ? 0 : Math.floor(random() * 4) }
  // After a number of acknowledged records (skewed small), plus a short delay.
  const killAfter = 1 + Math.floor(random() ** 2 * 3000)
  return { trigger: 'acks', killAfter, delayMs: random() < 0.5 ? 0 : Math.floor(random() * 15) }
}

/**
 * Runs the writer in `mode`, kills it as `plan` says, and returns what it acknowledged:
 * the number of calls and records, the end of the highest acknowledged call, and any
 * protocol problems (an acknowledgement that is not a call of the plan, a duplicate, or,
 * in 'none' mode, one out of order).
 */
async function runAndKill(t, dir, seed, mode, plan, problems) {
  const child = spawnFixture(t, 'durable-writer.mjs', [dir, String(seed), mode])
  const starts = new CallStarts(seed)
  const seen = new Set()
  let ackedCalls = 0
  let ackedRecords = 0
  let ackedEnd = 0
  let partial = ''
  let killed = false
  const kill = (delayMs) => {
    if (killed) return
    killed = true
    if (delayMs === 0) child.kill('SIGKILL')
    else setTimeout(() => child.kill('SIGKILL'), delayMs)
  }
  if (plan.trigger === 'spawn') kill(plan.delayMs)
  const stuck = setTimeout(() => {
    if (killed) return
    problems.push(`the writer did not reach its kill point within ${STUCK_MS} ms (${ackedRecords} records acknowledged)`)
    kill(0)
  }, STUCK_MS)
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk) => {
    const lines = (partial + chunk).split('\n')
    partial = lines.pop()
    for (const line of lines) {
      if (line === 'ready') {
        if (plan.trigger === 'ready') kill(plan.delayMs)
        continue
      }
      if (line === 'done') continue
      const m = /^(\d+) (\d+)$/.exec(line)
      if (m === null) {
        problems.push(`unexpected line from the writer: ${JSON.stringify(line)}`)
        continue
      }
      const first = Number(m[1])
      const count = Number(m[2])
      if (starts.get(first) !== count) problems.push(`the writer acknowledged ${count} records at ${first}, which is not a call of the plan`)
      if (seen.has(first)) problems.push(`the writer acknowledged the call at ${first} twice`)
      if (mode === 'none' && first !== ackedEnd) problems.push(`'none' mode acknowledged ${first} after ${ackedEnd}: out of order`)
      seen.add(first)
      ackedCalls++
      ackedRecords += count
      ackedEnd = Math.max(ackedEnd, first + count)
    }
    if (plan.trigger === 'acks' && ackedRecords >= plan.killAfter) kill(plan.delayMs)
  })
  const { code, signal } = await child.exited
  clearTimeout(stuck)
  if (signal !== 'SIGKILL') problems.push(`the writer died of ${signal}, code ${code}, not of our SIGKILL: ${child.stderrText}`)
  else if (child.stderrText !== '') problems.push(`the writer wrote to stderr: ${child.stderrText}`)
  return { ackedCalls, ackedRecords, ackedEnd }
}

function sameBytes(value, expected) {
  return Buffer.compare(Buffer.from(value.buffer, value.byteOffset, value.byteLength), expected) === 0
}

/**
 * Reopens the killed writer's log and checks it (see the file comment); pushes what is
 * wrong to `problems`. Returns recovery figures for the tally.
 */
async function checkRecovered(dir, seed, mode, ackedEnd, problems) {
  const check = (ok, message) => {
    if (!ok) problems.push(message)
    return ok
  }
  const options = { segmentBytes: SEGMENT_BYTES, durability: mode }
  const log = await Log.open(dir, options)
  let n
  let segments
  const { truncation, tempFilesRemoved } = log.recovery
  try {
    n = log.nextOffset
    check(n >= ackedEnd, `nextOffset ${n} is below the end of the acknowledged records (${ackedEnd}): acknowledged records were lost`)
    check(log.firstOffset === 0, `firstOffset is ${log.firstOffset}`)
    const starts = new CallStarts(seed)
    check(starts.has(n), `the log ends at ${n}, inside a call of the plan: a batch is half there`)
    if (mode === 'sync') check(log.durableOffset === n, `after recovery durableOffset is ${log.durableOffset}, not nextOffset ${n}`)

    // Every record, acknowledged or not, must be exactly what the writer wrote there.
    let expected = 0
    let timestamp
    let bad = 0
    for (const r of log.records()) {
      if (starts.has(r.offset)) timestamp = timestampFor(r.offset)
      const ok = r.offset === expected && r.timestamp === timestamp && sameBytes(r.value, payloadFor(r.offset))
      if (!ok && bad++ < 3) problems.push(`record ${r.offset} (expected offset ${expected}, timestamp ${timestamp}) differs from what was written: timestamp ${r.timestamp}, ${r.value.byteLength} bytes`)
      expected++
    }
    check(expected === n, `records() yielded ${expected} records, nextOffset is ${n}`)
    check(bad === 0, `${bad} records differ from what was written`)
    // Spot checks through get (index lookups), including the last acknowledged record.
    for (const o of [0, Math.floor(ackedEnd / 2), ackedEnd - 1, n - 1]) {
      if (o < 0 || o >= n) continue
      const r = log.get(o)
      check(r !== undefined && sameBytes(r.value, payloadFor(o)), `get(${o}) differs from what was written`)
    }
    check(log.get(n) === undefined, `get(${n}) (nextOffset) returned a record`)

    const infos = log.segments()
    segments = infos.length
    check(infos[0].baseOffset === 0, `the first segment starts at ${infos[0].baseOffset}`)
    for (let i = 1; i < infos.length; i++) check(infos[i].baseOffset === infos[i - 1].nextOffset, `segment ${i} starts at ${infos[i].baseOffset}, the previous one ends at ${infos[i - 1].nextOffset}`)
    check(infos.at(-1).nextOffset === n, `the last segment ends at ${infos.at(-1).nextOffset}, nextOffset is ${n}`)
    const report = await log.verify()
    check(report.ok, `verify: ${JSON.stringify(report.problem)}`)
    check(report.records === n, `verify counted ${report.records} records, nextOffset is ${n}`)

    // The recovered log takes new appends, and they survive a clean reopen.
    if (mode === 'sync') {
      check((await log.appendDurable(payloadFor(n), timestampFor(n))) === n, `appendDurable after recovery did not resolve with ${n}`)
      check((await log.appendBatchDurable([payloadFor(n + 1), payloadFor(n + 2)], timestampFor(n + 1))) === n + 1, `appendBatchDurable after recovery did not resolve with ${n + 1}`)
      check(log.durableOffset === n + 3, `durableOffset ${log.durableOffset} after the durable appends, expected ${n + 3}`)
    } else {
      check(log.append(payloadFor(n), timestampFor(n)) === n, `append after recovery did not return ${n}`)
      check(log.appendBatch([payloadFor(n + 1), payloadFor(n + 2)], timestampFor(n + 1)) === n + 1, `appendBatch after recovery did not return ${n + 1}`)
    }
  } finally {
    await log.close()
  }
  const again = await Log.open(dir, options)
  try {
    check(again.recovery.truncation === undefined, `a clean reopen after recovery cut ${JSON.stringify(again.recovery.truncation)}`)
    check(again.nextOffset === n + 3, `nextOffset after the second reopen is ${again.nextOffset}, expected ${n + 3}`)
    for (const o of [n, n + 1, n + 2, ackedEnd - 1]) {
      if (o < 0) continue
      const r = again.get(o)
      check(r !== undefined && sameBytes(r.value, payloadFor(o)), `get(${o}) after the second reopen differs from what was written`)
    }
    const report = await again.verify()
    check(report.ok, `verify after the second reopen: ${JSON.stringify(report.problem)}`)
  } finally {
    await again.close()
  }
  return { n, segments, truncation, tempFilesRemoved: tempFilesRemoved.length }
}

async function crashLoop(t, mode) {
  const started = performance.now()
  t.log(`${mode}: ${ITERATIONS} iterations, ${CONCURRENCY} at once; base seed ${BASE_SEED} (SEGLOG_CRASH_SEED to repeat)`)
  const tally = { iterations: 0, noAck: 0, ackedCalls: 0, ackedRecords: 0, recovered: 0, cut: 0, tempFilesRemoved: 0, maxSegments: 0, maxAcked: 0 }
  let failedIterations = 0
  let nextIteration = 0
  const worker = async () => {
    while (nextIteration < ITERATIONS) {
      const i = nextIteration++
      const seed = (BASE_SEED + i * 7919) >>> 0
      const plan = killPlan(seed)
      const where = `${mode} iteration ${i} (seed ${seed}, kill ${plan.trigger === 'acks' ? `after ${plan.killAfter} acked records` : `at ${plan.trigger}`} + ${plan.delayMs} ms)`
      const dir = tempDir(t)
      const problems = []
      let line
      try {
        const acked = await runAndKill(t, dir, seed, mode, plan, problems)
        if (plan.trigger === 'acks' && acked.ackedRecords < plan.killAfter) problems.push(`only ${acked.ackedRecords} records acknowledged before the kill, expected ${plan.killAfter}`)
        const recovered = await checkRecovered(dir, seed, mode, acked.ackedEnd, problems)
        tally.iterations++
        if (acked.ackedCalls === 0) tally.noAck++
        tally.ackedCalls += acked.ackedCalls
        tally.ackedRecords += acked.ackedRecords
        tally.recovered += recovered.n
        if (recovered.truncation) tally.cut++
        tally.tempFilesRemoved += recovered.tempFilesRemoved
        tally.maxSegments = Math.max(tally.maxSegments, recovered.segments)
        tally.maxAcked = Math.max(tally.maxAcked, acked.ackedRecords)
        line = `${where}: acked ${acked.ackedRecords} records in ${acked.ackedCalls} calls (up to ${acked.ackedEnd}), recovered ${recovered.n}, ${recovered.segments} segments${recovered.truncation ? `, cut: ${recovered.truncation.reason}` : ''}`
      } catch (err) {
        problems.push(`threw: ${err?.stack ?? err}`)
      }
      if (problems.length > 0) {
        failedIterations++
        for (const p of problems.slice(0, MAX_PROBLEMS)) t.fail(`${where}: ${p}`)
        if (problems.length > MAX_PROBLEMS) t.fail(`${where}: ... and ${problems.length - MAX_PROBLEMS} more problems`)
      } else if (VERBOSE) {
        t.log(line)
      }
      fs.rmSync(dir, { recursive: true, force: true }) // keep at most CONCURRENCY iterations' files on disk
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, ITERATIONS) }, worker))
  const seconds = ((performance.now() - started) / 1000).toFixed(1)
  t.log(
    `${mode} tally: ${tally.iterations} iterations in ${seconds} s; ${tally.noAck} killed before the first ack; ` +
      `${tally.ackedRecords} records acknowledged in ${tally.ackedCalls} calls (up to ${tally.maxAcked} in one iteration); ` +
      `${tally.recovered} records recovered; ${tally.cut} torn tails cut; ${tally.tempFilesRemoved} temp files removed; up to ${tally.maxSegments} segments`,
  )
  t.is(failedIterations, 0, `${failedIterations} of ${ITERATIONS} iterations failed`)
  t.is(tally.iterations, ITERATIONS)
  if (ITERATIONS >= 20) {
    // The workload must reach the interesting states, or the loop proves little.
    t.true(tally.maxSegments > 1, 'some writer rolled to a new segment')
    t.true(tally.ackedRecords > 0, 'some writer acknowledged records')
    t.true(tally.recovered >= tally.ackedRecords, 'at least every acknowledged record was recovered in total')
  }
}

test.serial(`'sync' mode: SIGKILL among concurrent appendDurable callers, ${ITERATIONS} times: every acknowledged record survives`, async (t) => {
  await crashLoop(t, 'sync')
})

test.serial(`'none' mode: SIGKILL while appending, ${ITERATIONS} times: every record whose append returned survives`, async (t) => {
  await crashLoop(t, 'none')
})
