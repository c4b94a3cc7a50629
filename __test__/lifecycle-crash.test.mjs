// Guards against a SIGKILL in the middle of deleteBefore, truncate or a cursor commit
// (or an append) leaving a log that is inconsistent: a gap, a duplicate, a record from
// before a truncation coming back, a half-removed prefix, orphan index or temp files, or
// a torn cursor. A child (fixtures/lifecycle-crash-writer.mjs) loops over those
// operations in one log directory, announcing each before and after; the parent kills it
// at random moments (often right as it announces a removal, truncation or commit),
// then checks the directory against what the child reported, and the next child carries
// on in the same directory. Reproduce with SEGLOG_LIFECYCLE_KILL_SEED=<seed from the
// log>; more iterations with SEGLOG_LIFECYCLE_KILL_ITERATIONS.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { Log } from '../dist/index.mjs'
import { prng } from './helpers/payload.mjs'
import { spawnFixture, tempDir } from './helpers/temp.mjs'
import { checkGenRecord, genTimestamp } from './fixtures/lifecycle-payload.mjs'

const SEGMENT_BYTES = 16 << 10 // as in the fixture
const ITERATIONS = Number(process.env.SEGLOG_LIFECYCLE_KILL_ITERATIONS ?? 30)
const BASE_SEED = Number(process.env.SEGLOG_LIFECYCLE_KILL_SEED ?? crypto.randomInt(2 ** 31))

/** What the log must hold, from the child's completed operations. */
class Model {
  first = 0
  next = 0
  /** offset -> [generation, timestamp] of the record last written there. */
  records = new Map()
  /** cursor name -> committed position. */
  cursors = new Map()
}

/**
 * Runs one child on `dir` and kills it per `plan`. Applies every completed operation to
 * `model` and returns the operation in flight at the kill (announced, not completed), if
 * any, and the child's counts of completed operations.
 */
async function runAndKill(t, dir, iteration, seed, plan, model, where) {
  const child = spawnFixture(t, 'lifecycle-crash-writer.mjs', [dir, String(iteration), String(seed)])
  let partial = ''
  let inFlight
  let killed = false
  const begun = { a: 0, d: 0, t: 0, c: 0 }
  const problems = []
  const kill = () => {
    if (killed) return
    killed = true
    if (plan.delay === 'now') child.kill('SIGKILL')
    else if (plan.delay === 'immediate') setImmediate(() => child.kill('SIGKILL'))
    else setTimeout(() => child.kill('SIGKILL'), plan.delay)
  }
  const onLine = (line) => {
    const [kind, op, ...rest] = line.split(' ')
    if (kind === 'ready') {
      if (Number(op) !== model.first || Number(rest[0]) !== model.next) {
        problems.push(`child opened at [${op}, ${rest[0]}), expected [${model.first}, ${model.next})`)
      }
      if (plan.kind === 'time') setTimeout(() => kill(), plan.afterMs)
      return
    }
    if (kind === 'B') {
      inFlight = { op, args: rest.map((x) => (/^\d+$/.test(x) ? Number(x) : x)) }
      begun[op]++
      if (op === 'a' && inFlight.args[0] !== model.next) problems.push(`append at ${inFlight.args[0]} while the log ended at ${model.next}`)
      if (plan.kind === 'op' && op === plan.op && begun[op] >= plan.count) kill()
      return
    }
    if (kind !== 'E' || inFlight === undefined || inFlight.op !== op) {
      problems.push(`unexpected line ${JSON.stringify(line)}`)
      return
    }
    const args = inFlight.args
    if (op === 'a') {
      const [first, count, generation] = args
      const timestamp = genTimestamp(first, generation)
      for (let i = 0; i < count; i++) model.records.set(first + i, [generation, timestamp])
      model.next = first + count
    } else if (op === 'd') {
      const first = Number(rest[0])
      if (first < model.first || first > Math.max(args[0], model.first)) problems.push(`deleteBefore(${args[0]}) moved firstOffset from ${model.first} to ${first}`)
      model.first = first
    } else if (op === 't') {
      const next = Number(rest[0])
      if (next !== Math.min(args[0], model.next)) problems.push(`truncate(${args[0]}) left nextOffset ${next}`)
      model.next = next
    } else if (op === 'c') {
      model.cursors.set(args[0], args[1])
    }
    inFlight = undefined
  }
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk) => {
    const lines = (partial + chunk).split('\n')
    partial = lines.pop()
    for (const line of lines) onLine(line)
  })
  const { code, signal } = await child.exited
  t.is(signal, 'SIGKILL', `${where}: the child died of SIGKILL, not on its own (code ${code}): ${child.stderrText}`)
  t.deepEqual(problems, [], `${where}: the child's reports are consistent`)
  return { inFlight, begun }
}

/** Files a crash left that a writer's open must remove: temp files and orphan indexes. */
function leftovers(dir) {
  const out = []
  const names = fs.readdirSync(dir)
  for (const n of names) {
    if (n.endsWith('.tmp')) out.push(path.join(dir, n))
    else if (/^\d{20}\.idx$/.test(n) && !names.includes(n.replace(/\.idx$/, '.seg'))) out.push(path.join(dir, n))
  }
  const cursors = path.join(dir, 'cursors')
  if (fs.existsSync(cursors)) for (const n of fs.readdirSync(cursors)) if (n.endsWith('.tmp')) out.push(path.join(cursors, n))
  return out.sort()
}

/**
 * Checks a log opened after the kill against the model and the operation in flight.
 * Returns `{ first, next }` and a note of what the in-flight operation left.
 */
async function checkLog(t, log, model, inFlight, where) {
  const first = log.firstOffset
  const next = log.nextOffset
  const op = inFlight?.op
  const args = inFlight?.args ?? []

  // Ends: exactly the model's, except for what the operation in flight may have done.
  if (op === 'd') t.true(first >= model.first && first <= Math.max(args[0], model.first), `${where}: firstOffset ${first} between ${model.first} and ${args[0]}`)
  else t.is(first, model.first, `${where}: firstOffset`)
  if (op === 'a') t.true(next === model.next || next === model.next + args[1], `${where}: nextOffset ${next} is ${model.next} or ${model.next + args[1]} (a batch is all or nothing)`)
  else if (op === 't') t.true(next >= Math.min(args[0], model.next) && next <= model.next, `${where}: nextOffset ${next} between ${args[0]} and ${model.next}`)
  else t.is(next, model.next, `${where}: nextOffset`)

  // Every record, dense from firstOffset, exactly the one last written at its offset.
  let expected = first
  let bad = 0
  const timestamps = []
  for (const r of log.records()) {
    let want = model.records.get(r.offset)
    if (r.offset >= model.next && op === 'a') want = [args[2], genTimestamp(args[0], args[2])]
    const got = checkGenRecord(r)
    const ok = r.offset === expected && typeof got === 'object' && want !== undefined && got.generation === want[0] && got.timestamp === want[1]
    if (!ok && bad++ < 5) t.fail(`${where}: record ${r.offset} (expected offset ${expected}): ${typeof got === 'string' ? got : `generation ${got.generation}, expected ${want?.[0]}`}`)
    timestamps.push(r.timestamp)
    expected++
  }
  t.is(expected, next, `${where}: records() yields ${first}..${next - 1} without gaps`)
  t.is(bad, 0, `${where}: every record is the one last written at its offset (none from before a truncation)`)

  const segments = log.segments()
  t.is(segments[0].baseOffset, first, `${where}: the first segment starts at firstOffset`)
  for (let i = 1; i < segments.length; i++) t.is(segments[i].baseOffset, segments[i - 1].nextOffset, `${where}: segments contiguous`)
  t.is(segments.at(-1).nextOffset, next)
  const report = await log.verify()
  t.true(report.ok, `${where}: verify ${JSON.stringify(report.problem)}`)
  t.is(report.records, next - first)

  // Time lookups agree with a scan of what is there.
  for (const q of [0, timestamps[0], timestamps.at(-1), 1_700_000_050_000, 1_700_000_099_999, 1_700_000_100_000]) {
    if (q === undefined) continue
    const i = timestamps.findIndex((ts) => ts >= q)
    t.is(log.offsetForTimestamp(q), i < 0 ? undefined : first + i, `${where}: offsetForTimestamp(${q})`)
  }

  // Cursors: every file parses, each at its committed position, or (being committed at
  // the kill) at the new one.
  const cursors = new Map(log.cursors().map((c) => [c.name, c.position]))
  for (const [name, position] of cursors) {
    const committed = model.cursors.get(name)
    const newOne = op === 'c' && args[0] === name ? args[1] : undefined
    t.true(position === committed || position === newOne, `${where}: cursor ${name} at ${position}, committed ${committed}${newOne === undefined ? '' : ` or ${newOne}`}`)
  }
  for (const name of model.cursors.keys()) t.true(cursors.has(name), `${where}: committed cursor ${name} is there`)
  return { first, next, cursors }
}

test(`SIGKILL during deleteBefore, truncate, cursor commits and appends, ${ITERATIONS} times: the log stays consistent`, async (t) => {
  t.log(`base seed ${BASE_SEED} (SEGLOG_LIFECYCLE_KILL_SEED to repeat)`)
  const random = prng(BASE_SEED)
  const dir = tempDir(t)
  const model = new Model()
  const inFlightAt = { a: 0, d: 0, t: 0, c: 0, none: 0 }
  const partial = { d: 0, t: 0, c: 0 }
  let leftoversSeen = 0
  let maxSegments = 0
  for (let i = 0; i < ITERATIONS; i++) {
    const seed = (BASE_SEED + i * 7919) >>> 0
    const roll = random()
    const delays = ['now', 'immediate', Math.floor(random() * 4)]
    const delay = delays[Math.floor(random() * delays.length)]
    const plan =
      roll < 0.2
        ? { kind: 'time', afterMs: 5 + Math.floor(random() * 150) }
        : roll < 0.3
          ? { kind: 'op', op: 'a', count: 1 + Math.floor(random() * 300), delay }
          : { kind: 'op', op: ['d', 't', 'c'][Math.floor(random() * 3)], count: 1 + Math.floor(random() * 20), delay }
    if (plan.kind === 'time') plan.delay = 'now'
    const where = `iteration ${i} (seed ${seed}, ${JSON.stringify(plan)})`
    const { inFlight } = await runAndKill(t, dir, i, seed, plan, model, where)
    inFlightAt[inFlight?.op ?? 'none']++

    // A reader first: it must see a consistent log without repairing anything.
    const left = leftovers(dir)
    leftoversSeen += left.length
    let readerNext
    {
      const reader = await Log.open(dir, { readOnly: true })
      try {
        readerNext = (await checkLog(t, reader, model, inFlight, `${where}, reader`)).next
      } finally {
        await reader.close()
      }
      t.deepEqual(leftovers(dir), left, `${where}: a reader removes nothing`)
    }

    const log = await Log.open(dir, { segmentBytes: SEGMENT_BYTES })
    try {
      t.deepEqual([...log.recovery.tempFilesRemoved].sort(), left, `${where}: the writer's open removes exactly the temp files and orphan indexes`)
      t.deepEqual(leftovers(dir), [], `${where}: no temp files or orphan indexes after a writer's open`)
      const { first, next, cursors } = await checkLog(t, log, model, inFlight, `${where}, writer`)
      t.is(next, readerNext, `${where}: the reader saw exactly what recovery kept`)
      for (const n of fs.readdirSync(dir)) {
        if (n.endsWith('.idx')) t.true(fs.existsSync(path.join(dir, n.replace(/\.idx$/, '.seg'))), `${where}: ${n} has its segment`)
      }
      maxSegments = Math.max(maxSegments, log.segments().length)

      // Bring the model up to what is there (the operation in flight may have completed).
      if (inFlight?.op === 'd' && first !== model.first) partial.d++
      if (inFlight?.op === 't' && next !== model.next) partial.t++
      if (inFlight?.op === 'c' && cursors.get(inFlight.args[0]) === inFlight.args[1] && model.cursors.get(inFlight.args[0]) !== inFlight.args[1]) partial.c++
      if (inFlight?.op === 'a' && next > model.next) {
        const [from, count, generation] = inFlight.args
        for (let k = 0; k < count; k++) model.records.set(from + k, [generation, genTimestamp(from, generation)])
      }
      model.first = first
      model.next = next
      model.cursors = cursors
      for (const o of model.records.keys()) if (o < first) model.records.delete(o)
    } finally {
      await log.close()
    }
  }
  t.log(`killed with in flight: ${JSON.stringify(inFlightAt)}; in-flight operations found applied after the kill: ${JSON.stringify(partial)}`)
  t.log(`${leftoversSeen} temp/orphan files found after kills; up to ${maxSegments} segments; the log ends at [${model.first}, ${model.next})`)
  t.true(model.first > 0, 'the children removed segments from the front')
  t.true(maxSegments > 1)
})
