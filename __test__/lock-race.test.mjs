// Guards against two writers on one directory when they arrive at the same moment: two
// processes and two worker threads are held at a barrier and released together to open
// the same directory for writing, round after round. Exactly one must win every round
// (the others fail at once with ERR_SEGLOG_LOCKED naming the directory), the winner's
// log must hold every earlier winner's record, and a lock held by a process that is
// SIGKILLed (or a worker that is terminated) must be free the moment it is gone.
import fs from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { Log, codecs } from '../dist/index.mjs'
import { spawnJsonChild, startJsonWorker } from './fixtures/reader-messages.mjs'
import { openLog, spawnFixture, tempDir, waitForLine } from './helpers/temp.mjs'

const ROUNDS = Number(process.env.SEGLOG_RACE_ROUNDS ?? 20)

/** A racer in another process (race-process.mjs), released by a line on its stdin. */
function startProcessRacer(t, name) {
  const child = spawnJsonChild(t, 'race-process.mjs', [name])
  const { inbox } = child
  return {
    name,
    kind: 'process',
    inbox,
    // Processes print 'armed' whenever they block for their next line.
    async arm() {
      await inbox.expect('armed')
    },
    fire(round, dir) {
      child.stdin.write(`go ${round} ${dir}\n`)
    },
    async release() {
      await inbox.expect('armed')
      child.stdin.write('release\n')
      await inbox.expect('released')
    },
    async stop() {
      child.stdin.end('exit\n')
      const { code } = await child.exited
      if (code !== 0) throw new Error(`racer ${name} exited with code ${code}: ${child.stderrText}`)
    },
  }
}

/** A racer in a worker thread (race-worker.mjs), released through `barrier` with Atomics. */
function startWorkerRacer(t, name, barrier) {
  const worker = startJsonWorker(t, 'race-worker.mjs', { name, barrier })
  const { inbox } = worker
  const ready = inbox.expect('ready')
  return {
    name,
    kind: 'worker',
    inbox,
    worker,
    async arm(round, dir, generation) {
      await ready
      worker.postMessage({ type: 'go', round, dir, generation })
      await inbox.expect('armed')
    },
    async release() {
      worker.postMessage({ type: 'release' })
      await inbox.expect('released')
    },
    async stop() {
      worker.postMessage({ type: 'exit' })
      const code = await worker.exited
      if (code !== 0) throw new Error(`racer ${name} exited with code ${code}`)
    },
  }
}

function startRacers(t) {
  const barrier = new Int32Array(new SharedArrayBuffer(4))
  const racers = [startProcessRacer(t, 'P1'), startProcessRacer(t, 'P2'), startWorkerRacer(t, 'W1', barrier), startWorkerRacer(t, 'W2', barrier)]
  return { barrier, racers }
}

/**
 * One round: arms every racer at its barrier, releases them all in one synchronous
 * block (stdin lines for the processes, Atomics.notify for the workers), and returns
 * each racer's result with the spread of their wake-up times (ns).
 */
async function race(barrier, racers, round, dir) {
  const generation = Atomics.load(barrier, 0)
  await Promise.all(racers.map((r) => r.arm(round, dir, generation)))
  for (const r of racers) if (r.kind === 'process') r.fire(round, dir)
  Atomics.store(barrier, 0, generation + 1)
  Atomics.notify(barrier, 0)
  const results = await Promise.all(racers.map(async (r) => ({ racer: r, ...(await r.inbox.expect('result')) })))
  const woke = results.map((r) => BigInt(r.woke))
  const spreadNs = Number(woke.reduce((a, b) => (b > a ? b : a)) - woke.reduce((a, b) => (b < a ? b : a)))
  return { results, spreadNs }
}

/** Asserts exactly one winner and ERR_SEGLOG_LOCKED naming `dir` for every loser. */
function checkOneWinner(t, round, dir, results) {
  const winners = results.filter((r) => r.ok)
  const summary = results.map((r) => `${r.racer.name}:${r.ok ? 'won' : r.code}`).join(' ')
  t.is(winners.length, 1, `round ${round}: exactly one writer (${summary})`)
  for (const r of results) {
    if (r.ok) continue
    t.is(r.code, 'ERR_SEGLOG_LOCKED', `round ${round}, ${r.racer.name}: ${r.message}`)
    t.true(typeof r.message === 'string' && r.message.includes(dir), `round ${round}, ${r.racer.name}: the message names the directory: ${r.message}`)
  }
  return winners[0]
}

function median(values) {
  const s = [...values].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}

test(`two processes and two workers racing to open one directory for writing: exactly one wins, ${ROUNDS} rounds in a row`, async (t) => {
  const root = tempDir(t)
  const { barrier, racers } = startRacers(t)
  // Every fifth round races on a directory that does not exist yet (creating it and the
  // lock file is part of the race); the others reopen the directory of the round before.
  const dirs = []
  const wins = new Map(racers.map((r) => [r.name, 0]))
  const spreads = []
  const expected = new Map() // dir -> the records its winners appended, in order
  for (let round = 0; round < ROUNDS; round++) {
    if (round % 5 === 0) dirs.push(path.join(root, `log-${round}`))
    const dir = dirs[dirs.length - 1]
    const { results, spreadNs } = await race(barrier, racers, round, dir)
    spreads.push(spreadNs)
    const winner = checkOneWinner(t, round, dir, results)
    if (winner === undefined) break
    wins.set(winner.racer.name, wins.get(winner.racer.name) + 1)
    const before = expected.get(dir) ?? []
    t.is(winner.nextOffset, before.length, `round ${round}: the winner sees every earlier winner's record`)
    expected.set(dir, [...before, `round ${round} by ${winner.racer.name}`])
    await winner.racer.release()
  }
  await Promise.all(racers.map((r) => r.stop()))

  for (const [dir, records] of expected) {
    const log = await openLog(t, dir, { codec: codecs.utf8, segmentBytes: 64 << 10 })
    t.deepEqual([...log.records()].map((r) => r.value), records, `${dir}: one record per round, in round order`)
    t.true((await log.verify()).ok)
  }
  t.log(`wins: ${[...wins].map(([n, w]) => `${n}=${w}`).join(' ')}`)
  t.log(`racers woke within ${(median(spreads) / 1e3).toFixed(0)} us of each other (median), ${(Math.max(...spreads) / 1e3).toFixed(0)} us at most`)
})

test('a lock held by a SIGKILLed process is free at once: the next race has exactly one winner, which sees the killed writer\'s records', async (t) => {
  const root = tempDir(t)
  const { barrier, racers } = startRacers(t)
  for (let round = 0; round < 4; round++) {
    const dir = path.join(root, `log-${round}`)
    // An idle holder (lock-holder.mjs) or one killed while appending as fast as it can
    // (writer.mjs, the crash-test writer).
    let holder
    if (round % 2 === 0) {
      holder = spawnFixture(t, 'lock-holder.mjs', [dir, '25'])
      await waitForLine(holder, (l) => l === 'ready')
    } else {
      holder = spawnFixture(t, 'writer.mjs', [dir, String(round)])
      await waitForLine(holder, (l) => /^\d+$/.test(l) && Number(l) >= 100)
    }
    // While the holder lives, every racer loses.
    const locked = await race(barrier, racers, 2 * round, dir)
    t.is(locked.results.filter((r) => r.ok).length, 0, 'nobody opens a log held by a live process')
    for (const r of locked.results) t.is(r.code, 'ERR_SEGLOG_LOCKED', `${r.racer.name}: ${r.message}`)

    holder.kill('SIGKILL')
    t.is((await holder.exited).signal, 'SIGKILL')
    // No retry, no waiting: the first attempt after the holder is gone wins.
    const { results } = await race(barrier, racers, 2 * round + 1, dir)
    const winner = checkOneWinner(t, round, dir, results)
    if (winner === undefined) break
    if (round % 2 === 0) t.is(winner.nextOffset, 25, 'the winner sees every record the killed holder appended')
    else t.true(winner.nextOffset >= 100, `the winner sees the killed writer's acknowledged records (${winner.nextOffset})`)
    await winner.racer.release()
  }
  await Promise.all(racers.map((r) => r.stop()))
})

test('a lock held by a worker thread is free once the worker is terminated without closing its log', async (t) => {
  const root = tempDir(t)
  const barrier = new Int32Array(new SharedArrayBuffer(4))
  const holderBarrier = new Int32Array(new SharedArrayBuffer(4))
  const racers = [startProcessRacer(t, 'P1'), startWorkerRacer(t, 'W1', barrier)]
  for (let round = 0; round < 3; round++) {
    const dir = path.join(root, `log-${round}`)
    fs.mkdirSync(dir)
    const holder = startWorkerRacer(t, `holder-${round}`, holderBarrier)
    const generation = Atomics.load(holderBarrier, 0)
    await holder.arm(round, dir, generation)
    Atomics.store(holderBarrier, 0, generation + 1)
    Atomics.notify(holderBarrier, 0)
    t.like(await holder.inbox.expect('result'), { ok: true, nextOffset: 0 })

    const locked = await race(barrier, racers, 2 * round, dir)
    for (const r of locked.results) t.is(r.code, 'ERR_SEGLOG_LOCKED', `${r.racer.name} while the worker holds the lock`)

    await holder.worker.terminate()
    const { results } = await race(barrier, racers, 2 * round + 1, dir)
    const winner = checkOneWinner(t, round, dir, results)
    if (winner === undefined) break
    t.is(winner.nextOffset, 1, 'the terminated worker\'s record is there')
    await winner.racer.release()
  }
  await Promise.all(racers.map((r) => r.stop()))
  // And the last directory opens here, with both records.
  const log = await openLog(t, path.join(root, 'log-2'), { codec: codecs.utf8 })
  t.is(log.nextOffset, 2)
  t.regex(log.get(0).value, /^round 2 by holder-2$/)
})

test('Log.open for writing is refused in this thread while racers hold the directory, and the refusal never steals the lock', async (t) => {
  // The main thread races too, against a process that already won: it must lose, and
  // losing (closing its own descriptor of the lock file) must not unlock the holder.
  const dir = tempDir(t)
  const { barrier, racers } = startRacers(t)
  const first = await race(barrier, racers, 0, dir)
  const winner = checkOneWinner(t, 0, dir, first.results)
  for (let i = 0; i < 5; i++) {
    const err = await t.throwsAsync(() => Log.open(dir), { code: 'ERR_SEGLOG_LOCKED' })
    t.true(err.message.includes(dir), err.message)
  }
  const again = await race(barrier, racers.filter((r) => r !== winner.racer), 1, dir)
  for (const r of again.results) t.is(r.code, 'ERR_SEGLOG_LOCKED', `${r.racer.name}: still locked after failed opens elsewhere`)
  await winner.racer.release()
  await Promise.all(racers.map((r) => r.stop()))
})
