// Guards the Store's promise to a writer that dies (docs/FORMAT.md 10.3, 10.4): a child
// process (fixtures/store-writer.mjs) runs the operations of storePlan(seed)
// (fixtures/store-plan.mjs: puts overwriting a small key space of integer and string keys,
// deletes, atomic putBatch) in 'sync' mode with 1..32 in flight, reports every
// ACKNOWLEDGED operation, and now and then takes a snapshot() or runs compact() (64 KiB
// segments, 8 KiB compaction steps) while the writes go on, reporting when each begins
// and ends. We SIGKILL it at a random moment, in some iterations aimed at the start of
// a snapshot or a compaction, and reopen the store. Then:
// - every acknowledged operation is reflected: each key holds the value of its last
//   write at or before the last acknowledged operation, or of one written after it;
// - a putBatch is all or nothing: every key of a batch group (written only by batches,
//   all of the group's keys at once) shows the same batch;
// - stronger: the store equals the model after some prefix of the operations that
//   contains every acknowledged one (what replaying a prefix of the log gives);
// - keys(), entries(), size and get agree; stats().warnings is empty, except after a kill
//   inside a compaction (a snapshot older than the compaction's segment removal may be
//   left and is then rightly rejected at open; counted and logged);
// - the recovered store takes durable writes and a compaction, and a second reopen shows
//   exactly the expected contents, with no warning, from the compaction's snapshot.
// A process kill cannot lose the page cache, so this does not prove the fsyncs happen
// (durability tests cover that); it proves that writes, snapshots, compaction and
// recovery never lose, invent or tear anything, wherever the kill lands.
//
// SEGLOG_STORE_CRASH_ITERATIONS (default 40); SEGLOG_STORE_CRASH_SEED=<seed> repeats a run
// (iteration i uses seed + i * 7919; SEGLOG_STORE_CRASH_SEED=<an iteration's seed> with
// SEGLOG_STORE_CRASH_ITERATIONS=1 repeats that one, kill timing aside);
// SEGLOG_STORE_CRASH_CONCURRENCY (default 3); SEGLOG_STORE_CRASH_VERBOSE=1 logs every iteration.
import crypto from 'node:crypto'
import fs from 'node:fs'

import test from 'ava'

import { Store, codecs } from '../dist/index.mjs'
import { prng } from './helpers/payload.mjs'
import { spawnFixture, tempDir } from './helpers/temp.mjs'
import { BATCH_GROUPS, applyOp, seqOf, showKey, storePlan } from './fixtures/store-plan.mjs'

const ITERATIONS = Number(process.env.SEGLOG_STORE_CRASH_ITERATIONS ?? 40)
const BASE_SEED = Number(process.env.SEGLOG_STORE_CRASH_SEED ?? crypto.randomInt(2 ** 31)) >>> 0
const CONCURRENCY = Math.max(1, Number(process.env.SEGLOG_STORE_CRASH_CONCURRENCY ?? 3))
const VERBOSE = process.env.SEGLOG_STORE_CRASH_VERBOSE === '1'
const MAX_PROBLEMS = 8
const STUCK_MS = 30_000
/**
 * Operations the writer may have issued past the last acknowledgement we saw (at most 32
 * in flight, plus those acknowledged in the last turn before the kill): a generous bound.
 */
const SLACK = 2000
const OPTIONS = { codec: codecs.utf8, durability: 'sync', segmentBytes: 64 << 10 }

/** How iteration `seed` kills its writer, and the writer's automatic-snapshot setting. */
function killPlan(seed) {
  const random = prng((seed ^ 0x27d4eb2f) >>> 0)
  const autoSnapshotBytes = random() < 0.5 ? 0 : 128 << 10
  const r = random()
  let plan
  if (r < 0.08) plan = { trigger: 'spawn', delayMs: Math.floor(random() * 150) }
  else if (r < 0.16) plan = { trigger: 'ready', delayMs: random() < 0.5 ? 0 : Math.floor(random() * 4) }
  else if (r < 0.43) plan = { trigger: 'S+', nth: 1 + Math.floor(random() * 4), delayMs: random() < 0.6 ? 0 : Math.floor(random() * 3) }
  else if (r < 0.7) plan = { trigger: 'C+', nth: 1 + Math.floor(random() * 4), delayMs: random() < 0.4 ? 0 : Math.floor(random() * 8) }
  else plan = { trigger: 'acks', killAfter: 1 + Math.floor(random() ** 2 * 8000), delayMs: random() < 0.5 ? 0 : Math.floor(random() * 15) }
  return { ...plan, autoSnapshotBytes }
}

function describePlan(plan) {
  const what = plan.trigger === 'acks' ? `after ${plan.killAfter} acks` : plan.nth ? `at ${plan.trigger} #${plan.nth}` : `at ${plan.trigger}`
  return `kill ${what} + ${plan.delayMs} ms, auto snapshots ${plan.autoSnapshotBytes ? `every ${plan.autoSnapshotBytes} bytes` : 'off'}`
}

/** Runs the writer, kills it as `plan` says; returns what it acknowledged and where it died. */
async function runAndKill(t, dir, seed, plan, problems) {
  const child = spawnFixture(t, 'store-writer.mjs', [dir, String(seed), String(plan.autoSnapshotBytes)])
  const acked = new Set()
  let ackedMax = -1
  let partial = ''
  let killed = false
  let ready = false
  /** The last maintenance marker written: at death, 'S+' = inside a snapshot, 'C+' = inside a compaction. */
  let marker = ''
  const counts = { 'S+': 0, 'C+': 0, snapshots: 0, compactions: 0 }
  const kill = (delayMs) => {
    if (killed) return
    killed = true
    if (delayMs === 0) child.kill('SIGKILL')
    else setTimeout(() => child.kill('SIGKILL'), delayMs)
  }
  if (plan.trigger === 'spawn') kill(plan.delayMs)
  const stuck = setTimeout(() => {
    if (killed) return
    problems.push(`the writer did not reach its kill point within ${STUCK_MS} ms (${acked.size} operations acknowledged)`)
    kill(0)
  }, STUCK_MS)
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk) => {
    const lines = (partial + chunk).split('\n')
    partial = lines.pop()
    for (const line of lines) {
      if (line === 'ready') {
        ready = true
        if (plan.trigger === 'ready') kill(plan.delayMs)
      } else if (line === 'done') {
        kill(0)
      } else if (line.startsWith('A ')) {
        for (const s of line.slice(2).split(' ')) {
          const seq = Number(s)
          if (!Number.isSafeInteger(seq) || seq < 0) problems.push(`bad acknowledgement ${JSON.stringify(s)}`)
          else if (acked.has(seq)) problems.push(`operation ${seq} acknowledged twice`)
          acked.add(seq)
          if (seq > ackedMax) ackedMax = seq
        }
        if (plan.trigger === 'acks' && acked.size >= plan.killAfter) kill(plan.delayMs)
      } else if (line === 'S+' || line === 'C+') {
        marker = line
        counts[line]++
        if (plan.trigger === line && counts[line] === plan.nth) kill(plan.delayMs)
      } else if (line === 'S-' || line.startsWith('C- ')) {
        if (marker !== line.slice(0, 1) + '+') problems.push(`${line} without ${line.slice(0, 1)}+`)
        marker = line.slice(0, 2)
        if (line === 'S-') counts.snapshots++
        else counts.compactions++
      } else {
        problems.push(`unexpected line from the writer: ${JSON.stringify(line)}`)
      }
    }
  })
  const { code, signal } = await child.exited
  clearTimeout(stuck)
  if (signal !== 'SIGKILL') problems.push(`the writer died of ${signal}, code ${code}, not of our SIGKILL: ${child.stderrText}`)
  else if (child.stderrText !== '') problems.push(`the writer wrote to stderr: ${child.stderrText}`)
  return { acked, ackedMax, ready, diedIn: marker === 'S+' ? 'snapshot' : marker === 'C+' ? 'compaction' : undefined, ...counts }
}

/** Every key and value of `store`, checking that keys(), entries(), size, has and get agree. */
async function readAll(store, check) {
  const keys = [...store.keys()]
  const state = new Map()
  for (const key of keys) {
    check(!state.has(key), `keys() yields ${showKey(key)} twice`)
    const value = store.get(key)
    check(typeof value === 'string', `keys() yields ${showKey(key)} but get() returns ${value}`)
    check(store.has(key), `keys() yields ${showKey(key)} but has() is false`)
    state.set(key, value)
  }
  check(store.size === keys.length, `size is ${store.size}, keys() yields ${keys.length}`)
  let n = 0
  for await (const [key, value] of store.entries()) {
    n++
    check(state.get(key) === value, `entries() yields ${showKey(key)} -> ${JSON.stringify(value?.slice(0, 30))}, get() says ${JSON.stringify(state.get(key)?.slice(0, 30))}`)
  }
  check(n === keys.length, `entries() yields ${n} entries, keys() ${keys.length}`)
  return state
}

const show = (value) => (value === undefined ? 'absent' : `seq ${seqOf(value)}`)

/**
 * Checks the recovered `state` against the plan: see the file comment. Returns the
 * length of the operation prefix the state equals.
 */
function checkAgainstPlan(state, seed, ackedMax, check) {
  const ackedEnd = ackedMax + 1
  const plan = storePlan(seed)
  const ops = []
  for (let i = 0; i < ackedEnd + SLACK; i++) ops.push(plan.next().value)
  const model = new Map()
  for (let i = 0; i < ackedEnd; i++) applyOp(model, ops[i])

  // 1. Per key: the value at the last acknowledged operation, or one written after it.
  const allowed = new Map() // key -> Set of values (undefined = absent)
  const allow = (key, value) => {
    if (!allowed.has(key)) allowed.set(key, new Set([model.get(key)]))
    allowed.get(key).add(value)
  }
  for (const key of model.keys()) allow(key, model.get(key))
  for (let i = ackedEnd; i < ops.length; i++) {
    const op = ops[i]
    if (op.op === 'put') allow(op.key, op.value)
    else if (op.op === 'delete') allow(op.key, undefined)
    else for (const [key, value] of op.entries) allow(key, value)
  }
  let bad = 0
  for (const key of new Set([...model.keys(), ...state.keys()])) {
    const value = state.get(key)
    const ok = allowed.has(key) ? allowed.get(key).has(value) : value === undefined
    if (!ok && bad++ < 4) {
      check(false, `key ${showKey(key)} is ${show(value)}${value !== undefined && !allowed.has(key) ? ' (never written)' : ''}; at the last acknowledged operation (${ackedMax}) it was ${show(model.get(key))}, and no later write gives ${show(value)}`)
    }
  }
  check(bad === 0, `${bad} keys hold a value that is neither their acknowledged one nor a later one`)

  // 2. Batches are all or nothing.
  for (const group of BATCH_GROUPS) {
    const seqs = new Set(group.map((key) => show(state.get(key))))
    check(seqs.size === 1, `the keys of batch group ${JSON.stringify(group[0])}... show different batches: ${[...seqs].join(', ')}`)
  }

  // 3. The state is the model after some prefix of the operations containing every
  // acknowledged one. Track the number of keys where model and state differ.
  const differs = (key) => model.get(key) !== state.get(key)
  let mismatches = 0
  for (const key of new Set([...model.keys(), ...state.keys()])) if (differs(key)) mismatches++
  for (let n = ackedEnd; ; n++) {
    if (mismatches === 0) return n
    if (n === ops.length) break
    const op = ops[n]
    const touched = [...new Set(op.op === 'batch' ? op.entries.map(([key]) => key) : [op.key])]
    for (const key of touched) if (differs(key)) mismatches--
    applyOp(model, op)
    for (const key of touched) if (differs(key)) mismatches++
  }
  check(false, `the store equals the model after no prefix of ${ackedEnd}..${ops.length} operations (every acknowledged one is below ${ackedEnd})`)
  return -1
}

/** Reopens, checks (see the file comment), writes, compacts, reopens and checks again. */
async function checkRecovered(dir, seed, died, problems) {
  const check = (ok, message) => {
    if (!ok) problems.push(message)
    return ok
  }
  let store = await Store.open(dir, OPTIONS)
  let expected
  let stats
  let prefix
  try {
    stats = store.stats()
    check(stats.durability.poisoned === undefined, `poisoned after reopen: ${stats.durability.poisoned}`)
    if (stats.warnings.length > 0) check(died.diedIn === 'compaction', `warnings after a kill outside a compaction: ${JSON.stringify(stats.warnings)}`)
    const state = await readAll(store, check)
    prefix = checkAgainstPlan(state, seed, died.ackedMax, check)
    // 1 and '1' both exist in the key space; they must never be confused.
    for (const [key, value] of state) {
      const head = `|${typeof key === 'number' ? 'i' : 's'}:${key}|`
      if (!value.includes(head)) {
        check(false, `key ${showKey(key)} holds a value written to another key: ${JSON.stringify(value.slice(0, 40))}`)
        break
      }
    }

    // The recovered store takes writes and a compaction.
    expected = new Map(state)
    const writes = [
      [0, 'after-crash int 0'],
      ['0', 'after-crash string 0'],
      ['after-crash', 'x'.repeat(3000)],
    ]
    for (const [key, value] of writes) {
      await store.putDurable(key, value)
      expected.set(key, value)
    }
    const batch = BATCH_GROUPS[3].map((key) => [key, `after-crash batch ${key}`])
    await store.putBatchDurable(batch)
    for (const [key, value] of batch) expected.set(key, value)
    check((await store.deleteDurable('user:7')) === expected.has('user:7'), 'deleteDurable after recovery resolved with whether the key existed')
    expected.delete('user:7')
    await store.compact()
    const after = await readAll(store, check)
    check(sameState(after, expected), `after the post-recovery writes and compact(): ${diff(after, expected)}`)
  } finally {
    await store.close()
  }
  store = await Store.open(dir, OPTIONS)
  try {
    const s = store.stats()
    check(s.warnings.length === 0, `warnings on the reopen after a compaction: ${JSON.stringify(s.warnings)}`)
    check(s.snapshot.loaded !== undefined, 'the reopen after a compaction loaded no snapshot')
    check(s.snapshot.recordsReplayed === 0, `the reopen after compact() and close replayed ${s.snapshot.recordsReplayed} records`)
    const again = await readAll(store, check)
    check(sameState(again, expected), `after the second reopen: ${diff(again, expected)}`)
  } finally {
    await store.close()
  }
  return { stats, prefix }
}

function sameState(a, b) {
  if (a.size !== b.size) return false
  for (const [key, value] of b) if (a.get(key) !== value) return false
  return true
}

function diff(actual, expected) {
  const out = []
  for (const key of new Set([...actual.keys(), ...expected.keys()])) {
    if (actual.get(key) !== expected.get(key)) out.push(`${showKey(key)}: ${show(actual.get(key))}, expected ${show(expected.get(key))}`)
  }
  return `${out.length} keys differ (${out.slice(0, 5).join('; ')})`
}

test(`'sync' mode: SIGKILL at random moments, during snapshots and compactions, ${ITERATIONS} times: every acknowledged write survives, batches all or nothing`, async (t) => {
  const started = performance.now()
  t.log(`${ITERATIONS} iterations, ${CONCURRENCY} at once; base seed ${BASE_SEED} (SEGLOG_STORE_CRASH_SEED to repeat)`)
  const tally = {
    iterations: 0,
    beforeReady: 0,
    noAck: 0,
    acked: 0,
    unackedRecovered: 0,
    inSnapshot: 0,
    inCompaction: 0,
    aimedSnapshot: 0,
    aimedCompaction: 0,
    snapshotsDone: 0,
    compactionsDone: 0,
    snapshotLoaded: 0,
    warnings: 0,
  }
  const warningSamples = []
  let failed = 0
  let nextIteration = 0
  const worker = async () => {
    while (nextIteration < ITERATIONS) {
      const i = nextIteration++
      const seed = (BASE_SEED + i * 7919) >>> 0
      const plan = killPlan(seed)
      const where = `iteration ${i} (seed ${seed}, ${describePlan(plan)})`
      const dir = tempDir(t)
      const problems = []
      let line
      try {
        const died = await runAndKill(t, dir, seed, plan, problems)
        const { stats, prefix } = await checkRecovered(dir, seed, died, problems)
        tally.iterations++
        if (!died.ready) tally.beforeReady++
        if (died.acked.size === 0) tally.noAck++
        tally.acked += died.acked.size
        if (prefix >= 0) tally.unackedRecovered += prefix - (died.ackedMax + 1)
        if (plan.trigger === 'S+') tally.aimedSnapshot++
        if (plan.trigger === 'C+') tally.aimedCompaction++
        if (died.diedIn === 'snapshot') tally.inSnapshot++
        if (died.diedIn === 'compaction') tally.inCompaction++
        tally.snapshotsDone += died.snapshots
        tally.compactionsDone += died.compactions
        if (stats.snapshot.loaded !== undefined) tally.snapshotLoaded++
        if (stats.warnings.length > 0) {
          tally.warnings++
          if (warningSamples.length < 3) warningSamples.push(`${where}, killed inside a ${died.diedIn}: ${stats.warnings.join('; ')}`)
        }
        line = `${where}: ${died.acked.size} acked (last ${died.ackedMax}), state = first ${prefix} operations, died ${died.diedIn ? `inside a ${died.diedIn}` : 'outside maintenance'}, ${died.snapshots} snapshots and ${died.compactions} compactions done, replayed ${stats.snapshot.recordsReplayed} records from ${stats.snapshot.loaded ?? 'the log start'}`
      } catch (err) {
        problems.push(`threw: ${err?.stack ?? err}`)
      }
      if (problems.length > 0) {
        failed++
        for (const p of problems.slice(0, MAX_PROBLEMS)) t.fail(`${where}: ${p}`)
        if (problems.length > MAX_PROBLEMS) t.fail(`${where}: ... and ${problems.length - MAX_PROBLEMS} more problems`)
      } else if (VERBOSE) {
        t.log(line)
      }
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, ITERATIONS) }, worker))
  const seconds = ((performance.now() - started) / 1000).toFixed(1)
  t.log(
    `tally: ${tally.iterations} iterations in ${seconds} s; ${tally.acked} operations acknowledged (${tally.noAck} iterations killed before the first ack, ${tally.beforeReady} before the store was open); ` +
      `${tally.unackedRecovered} unacknowledged operations found applied; kills inside a snapshot: ${tally.inSnapshot} (${tally.aimedSnapshot} aimed), inside a compaction: ${tally.inCompaction} (${tally.aimedCompaction} aimed); ` +
      `${tally.snapshotsDone} snapshots and ${tally.compactionsDone} compactions completed before the kills; ${tally.snapshotLoaded} reopens loaded a snapshot; ${tally.warnings} reopens had warnings`,
  )
  for (const w of warningSamples) t.log(`warning (expected only after a kill inside a compaction): ${w}`)
  t.is(failed, 0, `${failed} of ${ITERATIONS} iterations failed`)
  t.is(tally.iterations, ITERATIONS)
  if (ITERATIONS >= 20) {
    // The workload must reach the interesting states, or the loop proves little.
    t.true(tally.acked > 0, 'some writer acknowledged operations')
    t.true(tally.compactionsDone > 0, 'some writer completed a compaction before its kill')
    t.true(tally.inSnapshot + tally.inCompaction > 0, 'some kill landed inside a snapshot or a compaction')
  }
})
