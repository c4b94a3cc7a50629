// Guards the Store's contract (docs/FORMAT.md 10, ts/store.ts): integer and string keys
// are distinct, writes are visible at once, keys()/entries() show the contents, durable
// writes resolve in 'sync' mode and a failed sync poisons the store (reads keep working,
// a reopen has everything acknowledged), compaction keeps every value right while puts
// and gets go on, a reopen after a snapshot replays only the tail, a damaged, missing,
// stale or foreign snapshot is skipped with a warning naming it (never trusted, never
// deleted) and the store still opens with the right contents, a log that is not a store
// is refused as corrupt, one writer per directory, and compaction keeps the directory
// within twice the live data.
//
// Fault injection is process-wide, so the test that arms a fault is test.serial.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { setImmediate as nextTurn } from 'node:timers/promises'
import zlib from 'node:zlib'

import test from 'ava'

import { Log, Store, codecs } from '../dist/index.mjs'
import { native } from '../dist/native.js'
import { tempDir } from './helpers/temp.mjs'
import { checkContents, contents, directoryBytes, modelContents, openStore, showKey } from './fixtures/store-helpers.mjs'

const EIO = 5
const SNAPSHOT_HEADER = 64
const SNAPSHOT_ENTRY = 24

function expectIoError(t, err, where) {
  t.is(err?.code, 'ERR_SEGLOG_IO', `${where}: code (${err})`)
  t.is(err?.errno, EIO, `${where}: errno`)
}

// ---------------------------------------------------------------------------------------
// Fault injection (serial).

test.serial("a failed sync in 'sync' mode rejects putDurable with ERR_SEGLOG_IO and poisons the store: later writes fail the same way, reads keep working, a reopen has every acknowledged write", async (t) => {
  const dir = tempDir(t)
  const store = await openStore(t, dir, { codec: codecs.json, durability: 'sync', segmentBytes: 64 << 10 })
  const model = new Map()
  for (let i = 0; i < 20; i++) {
    await store.putDurable(i, { i, s: 'x'.repeat(i) })
    model.set(i, { i, s: 'x'.repeat(i) })
  }
  await store.putBatchDurable([
    ['a', 1],
    ['b', 2],
  ])
  model.set('a', 1).set('b', 2)
  t.true(await store.deleteDurable(3))
  model.delete(3)
  const durable = store.durableOffset
  t.is(durable, store.stats().nextOffset, 'everything acknowledged is durable')

  t.teardown(() => native.NativeLog.clearFaultsForTest())
  native.NativeLog.injectFaultForTest('sync', 0, EIO, false)
  const failed = [store.putDurable('doomed', 1), store.putDurable('doomed2', 2), store.sync()]
  const results = await Promise.allSettled(failed)
  for (const r of results) {
    t.is(r.status, 'rejected', 'no caller of the failed sync is told its write is durable')
    expectIoError(t, r.reason, 'a caller of the failed sync')
  }
  native.NativeLog.clearFaultsForTest()
  t.is(store.durableOffset, durable, 'durableOffset did not move')
  t.truthy(store.stats().durability.poisoned, 'stats() reports the poisoning')

  // Every later write fails with the same error, even with the disk healthy again.
  const next = store.stats().nextOffset
  expectIoError(t, t.throws(() => store.put('later', 1)), 'put')
  expectIoError(t, t.throws(() => store.delete(0)), 'delete')
  expectIoError(t, t.throws(() => store.putBatch([['later', 1]])), 'putBatch')
  let p
  t.notThrows(() => {
    p = store.putDurable('later', 1)
  }, 'putDurable returns a promise')
  expectIoError(t, await t.throwsAsync(p), 'putDurable')
  expectIoError(t, await t.throwsAsync(store.putBatchDurable([['later', 1]])), 'putBatchDurable')
  expectIoError(t, await t.throwsAsync(store.deleteDurable(0)), 'deleteDurable')
  expectIoError(t, await t.throwsAsync(store.sync()), 'sync')
  expectIoError(t, await t.throwsAsync(store.snapshot()), 'snapshot')
  expectIoError(t, await t.throwsAsync(store.compact()), 'compact')
  t.is(store.stats().nextOffset, next, 'the failed writes wrote nothing')
  t.false(store.has('later'))

  // Reads keep working.
  for (const [key, value] of model) t.deepEqual(store.get(key), value, `get(${showKey(key)}) after the poisoning`)
  t.is(store.get(3), undefined)
  const keys = [...store.keys()]
  t.true(keys.length >= model.size)
  let n = 0
  for await (const [key, value] of store.entries()) {
    n++
    if (model.has(key)) t.deepEqual(value, model.get(key))
  }
  t.is(n, keys.length)

  await t.notThrowsAsync(store.close(), 'close() of a poisoned store resolves')
  const again = await openStore(t, dir, { codec: codecs.json, durability: 'sync' })
  for (const [key, value] of model) t.deepEqual(again.get(key), value, `get(${showKey(key)}) after reopen`)
  t.is(again.get(3), undefined, 'the acknowledged delete survived')
  t.deepEqual(again.stats().warnings, [])
  await again.putDurable('after', true)
  t.true(again.get('after'))
})

// ---------------------------------------------------------------------------------------
// Keys, values, reads.

test("integer and string keys are distinct (1 vs '1'); writes are visible to get at once; keys(), entries(), size, has, delete", async (t) => {
  const dir = tempDir(t)
  const store = await openStore(t, dir, { codec: codecs.json, segmentBytes: 64 << 10 })
  const model = new Map()
  const put = (key, value) => {
    store.put(key, value)
    model.set(key, value)
    t.deepEqual(store.get(key), value, `get(${showKey(key)}) right after put`)
    t.true(store.has(key))
  }
  put(1, 'integer one')
  put('1', 'string one')
  put(0, 'zero')
  put('0', { zero: 'string' })
  t.is(store.get(1), 'integer one')
  t.is(store.get('1'), 'string one')
  put(Number.MAX_SAFE_INTEGER, 'max safe')
  put(String(Number.MAX_SAFE_INTEGER), 'max safe as a string')
  put('ключ 🔑 数据', [1, 2, 3])
  put('k'.repeat(1024), 'longest ASCII key')
  put('日'.repeat(341) + 'a', 'longest multibyte key (1024 bytes)')
  put('null', null)
  put(7, 0)
  put(8, false)
  put(9, '')
  t.is(store.size, model.size)

  // Overwrites change the value, not the size.
  const size = store.size
  put(1, { overwritten: true })
  put('1', 'string one again')
  t.is(store.size, size)
  t.deepEqual(store.get(1), { overwritten: true })
  t.is(store.get('1'), 'string one again')

  // delete: returns whether the key existed; the other kind of key is untouched.
  t.true(store.delete(1))
  model.delete(1)
  t.false(store.has(1))
  t.is(store.get(1), undefined)
  t.is(store.get('1'), 'string one again')
  t.false(store.delete(1), 'a second delete finds nothing')
  t.false(store.delete(12345), 'delete of a key never written')
  t.is(store.get(12345), undefined)
  t.false(store.has('12345'))

  t.deepEqual(await contents(t, store), modelContents(model))
  const keys = [...store.keys()]
  t.true(keys.includes('1') && !keys.includes(1) && keys.includes(0) && keys.includes('0'))
  const fromIterator = []
  for await (const entry of store) fromIterator.push(entry)
  t.is(fromIterator.length, model.size, 'for await (of store) yields every entry')

  // The distinction survives a reopen (through the log, then through a snapshot).
  await store.close()
  const again = await openStore(t, dir, { codec: codecs.json })
  await checkContents(t, again, model, 'after reopen')
  await again.snapshot()
  await again.close()
  const third = await openStore(t, dir, { codec: codecs.json })
  t.truthy(third.stats().snapshot.loaded)
  await checkContents(t, third, model, 'after reopen from a snapshot')
})

test('raw codec: get returns a copy; changing the value passed to put or the Buffer returned changes nothing stored', async (t) => {
  const store = await openStore(t, tempDir(t))
  const value = Buffer.from('original')
  store.put('k', value)
  value.fill(0)
  t.is(store.get('k').toString(), 'original')
  const got = store.get('k')
  got.fill(1)
  t.is(store.get('k').toString(), 'original')
  store.put('empty', new Uint8Array(0))
  t.is(store.get('empty').length, 0)
  t.true(store.has('empty'))
  const big = crypto.randomBytes(100_000) // larger than get's first scratch buffer
  store.put(2, big)
  t.true(Buffer.from(store.get(2)).equals(big))
  store.put(3, new Uint8Array([1, 2, 3]).subarray(1))
  t.deepEqual([...store.get(3)], [2, 3])
})

test("'sync' mode: putDurable, deleteDurable, putBatchDurable and sync() resolve once durable; concurrent callers share syncs", async (t) => {
  const dir = tempDir(t)
  const store = await openStore(t, dir, { codec: codecs.utf8, durability: 'sync', segmentBytes: 64 << 10 })
  t.is(store.durability, 'sync')
  t.is(await store.putDurable('a', 'A'), undefined)
  t.is(store.durableOffset, store.stats().nextOffset)
  t.is(await store.deleteDurable('a'), true)
  t.is(await store.deleteDurable('a'), false)
  t.is(store.durableOffset, store.stats().nextOffset)
  await store.putBatchDurable([
    [1, 'one'],
    ['1', 'uno'],
  ])
  t.is(store.durableOffset, store.stats().nextOffset)
  store.put('plain', 'p')
  await store.sync()
  t.is(store.durableOffset, store.stats().nextOffset, 'sync() covers a plain put')

  const before = store.stats().durability.syncs
  const all = []
  for (let i = 0; i < 200; i++) all.push(store.putDurable(i, `v${i}`))
  await Promise.all(all)
  const syncs = store.stats().durability.syncs - before
  t.true(syncs >= 1 && syncs < 200, `200 concurrent putDurable calls shared ${syncs} syncs`)
  t.is(store.durableOffset, store.stats().nextOffset)
  t.is(store.stats().durability.mode, 'sync')
  t.is(store.stats().durability.poisoned, undefined)
  for (let i = 0; i < 200; i++) t.is(store.get(i), `v${i}`)
})

// ---------------------------------------------------------------------------------------
// Compaction and snapshots.

test('compaction while puts, deletes, batches and gets continue keeps every value right, during, after and across a reopen', async (t) => {
  const dir = tempDir(t)
  const options = { codec: codecs.utf8, segmentBytes: 64 << 10, compactionStepBytes: 4 << 10, snapshotEveryBytes: 0 }
  const store = await openStore(t, dir, options)
  const model = new Map()
  const value = (key, round) => `${showKey(key)}@${round}:${'v'.repeat((round * 37 + (typeof key === 'number' ? key : key.length)) % 300)}`
  const KEYS = 1500
  const keyOf = (i) => (i % 3 === 0 ? `s${i}` : i)
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < KEYS; i++) {
      const key = keyOf(i)
      store.put(key, value(key, round))
      model.set(key, value(key, round))
    }
  }
  const segmentsBefore = store.stats().segments
  t.true(segmentsBefore > 10, `${segmentsBefore} segments before compaction`)

  let settled = false
  const compaction = store.compact().finally(() => {
    settled = true
  })
  let turns = 0
  let turnsInCompaction = 0
  let round = 5
  let r = 1
  const random = () => ((r = (r * 1103515245 + 12345) >>> 0) / 2 ** 32)
  while (!settled) {
    if (store.stats().compaction !== undefined) turnsInCompaction++
    turns++
    for (let j = 0; j < 20; j++) {
      // Writes go to the first third of the keys (the rest must be copied by the compaction).
      const key = keyOf(Math.floor(random() * (KEYS / 3)))
      const what = random()
      if (what < 0.6) {
        store.put(key, value(key, round++))
        model.set(key, value(key, round - 1))
      } else if (what < 0.75) {
        t.is(store.delete(key), model.has(key), `delete(${showKey(key)}) during compaction`)
        model.delete(key)
      } else if (what < 0.85) {
        const k2 = keyOf(Math.floor(random() * (KEYS / 3)))
        const entries = [
          [key, value(key, round)],
          [k2, value(k2, round + 1)],
        ]
        round += 2
        store.putBatch(entries)
        for (const [k, v] of entries) model.set(k, v)
      }
      const probe = keyOf(Math.floor(random() * KEYS))
      t.is(store.get(probe), model.get(probe), `get(${showKey(probe)}) during compaction`)
    }
    if (turns % 50 === 0) {
      let bad = 0
      for (const [k, v] of model) if (store.get(k) !== v) bad++
      t.is(bad, 0, `every key right in turn ${turns} of the compaction`)
    }
    await nextTurn()
  }
  const result = await compaction
  t.log(`compaction: ${turns} event-loop turns (${turnsInCompaction} with stats().compaction set), ${JSON.stringify(result)}`)
  t.true(turnsInCompaction > 1, 'the compaction ran in several steps with writes in between')
  t.true(result.recordsDropped > 0)
  t.true(result.recordsCopied >= KEYS / 2, `${result.recordsCopied} records copied`)
  t.true(result.segmentsRemoved > 0)
  t.true(result.bytesReclaimed > 0)
  t.is(store.stats().compaction, undefined, 'no compaction is running any more')
  t.deepEqual(store.stats().lastCompaction, result)
  await checkContents(t, store, model, 'after the compaction')

  await store.close()
  const again = await openStore(t, dir, options)
  t.deepEqual(again.stats().warnings, [])
  await checkContents(t, again, model, 'after reopen')
  // A second compaction, then reopen again.
  t.true(again.stats().garbageBytes > 0, 'the writes during the compaction left garbage')
  await again.compact()
  t.is(again.stats().garbageBytes, 0, 'a compaction with no writes going on leaves no garbage')
  t.is(again.stats().logBytes, again.stats().liveBytes)
  await checkContents(t, again, model, 'after a second compaction')
  await again.close()
  const third = await openStore(t, dir, options)
  t.deepEqual(third.stats().warnings, [])
  t.is(third.stats().snapshot.recordsReplayed, 0, 'the compaction snapshot covers the whole log')
  await checkContents(t, third, model, 'after the last reopen')
})

test('a reopen after snapshot() loads it and replays only the records written after it', async (t) => {
  const dir = tempDir(t)
  const options = { codec: codecs.utf8, segmentBytes: 64 << 10, snapshotEveryBytes: 0 }
  const store = await openStore(t, dir, options)
  const model = new Map()
  for (let i = 0; i < 3000; i++) {
    const key = i % 2 ? i % 700 : `k${i % 500}`
    store.put(key, `v${i}`)
    model.set(key, `v${i}`)
  }
  store.delete(1)
  model.delete(1)
  const snap = await store.snapshot()
  const at = store.stats().nextOffset
  t.is(snap.position, at, 'the snapshot covers every record written before it')
  t.is(path.dirname(snap.path), path.join(dir, 'snapshots'))
  t.is(path.basename(snap.path), `${String(at).padStart(20, '0')}.snap`)
  t.true(fs.existsSync(snap.path))
  t.is(store.stats().snapshot.lastPosition, at)
  // The tail: 7 records (5 puts, a delete of a present key, a batch of one).
  for (let i = 0; i < 5; i++) {
    store.put(`tail${i}`, `t${i}`)
    model.set(`tail${i}`, `t${i}`)
  }
  t.true(store.delete('k0'))
  model.delete('k0')
  store.putBatch([[3, 'batched']])
  model.set(3, 'batched')
  t.is(store.stats().nextOffset, at + 7)
  await store.close()

  const again = await openStore(t, dir, options)
  const s = again.stats()
  t.is(s.snapshot.loaded, snap.path)
  t.is(s.snapshot.replayedFrom, at)
  t.is(s.snapshot.recordsReplayed, 7, 'only the tail was replayed')
  t.is(s.snapshot.lastPosition, at)
  t.deepEqual(s.warnings, [])
  await checkContents(t, again, model, 'after reopen from the snapshot')
  t.is(s.keys, model.size)

  // Without a usable snapshot the whole log is replayed, to the same contents.
  await again.close()
  fs.rmSync(path.join(dir, 'snapshots'), { recursive: true })
  const third = await openStore(t, dir, options)
  t.is(third.stats().snapshot.loaded, undefined)
  t.is(third.stats().snapshot.recordsReplayed, at + 7)
  await checkContents(t, third, model, 'after reopen from the log alone')
})

// ---------------------------------------------------------------------------------------
// Damaged snapshots.

/**
 * A store with two snapshots (older S1, newer S2) and records after each, closed. Returns
 * its directory, the two snapshot paths, the final contents and a function that copies
 * the directory for one case.
 */
async function storeWithTwoSnapshots(t) {
  const dir = tempDir(t)
  const options = { codec: codecs.utf8, segmentBytes: 64 << 10, snapshotEveryBytes: 0 }
  const store = await Store.open(dir, options)
  const model = new Map()
  const put = (key, value) => {
    store.put(key, value)
    model.set(key, value)
  }
  for (let i = 0; i < 400; i++) put(i % 3 ? i : `s${i}`, `a${i}:${'x'.repeat(i % 150)}`)
  const s1 = await store.snapshot()
  for (let i = 0; i < 200; i++) put(i % 5 ? i * 2 : `s${i * 3}`, `b${i}`)
  for (let i = 0; i < 30; i++) if (store.delete(i * 7)) model.delete(i * 7)
  store.putBatch([
    ['batch-a', 'A'],
    ['batch-b', 'B'],
  ])
  model.set('batch-a', 'A').set('batch-b', 'B')
  const s2 = await store.snapshot()
  for (let i = 0; i < 50; i++) put(`c${i % 20}`, `c${i}`)
  store.delete('s3')
  model.delete('s3')
  const nextOffset = store.stats().nextOffset
  await store.close()
  t.deepEqual(fs.readdirSync(path.join(dir, 'snapshots')).sort(), [path.basename(s1.path), path.basename(s2.path)])
  return { dir, options, s1, s2, model, nextOffset }
}

/** Recomputes the header CRC (and, if `entries`, the entries CRC) of snapshot bytes `b`. */
function resealSnapshot(b, { entries = true } = {}) {
  if (entries) b.writeUInt32LE(zlib.crc32(b.subarray(SNAPSHOT_HEADER)), 56)
  b.writeUInt32LE(zlib.crc32(b.subarray(0, 60)), 60)
  return b
}

const snapName = (position) => `${String(position).padStart(20, '0')}.snap`

/**
 * Each case damages the copy of the two-snapshot store in `dir` (s1 and s2 are the snapshot
 * paths in it) and says which snapshot must be loaded ('s1', 's2' or null for none) and
 * which files must be named by a warning.
 */
const SNAPSHOT_CASES = [
  { name: 'nothing damaged (control)', loaded: 's2', warned: [], damage() {} },
  { name: 'S2 deleted', loaded: 's1', warned: [], damage: ({ s2 }) => fs.rmSync(s2) },
  { name: 'both deleted', loaded: null, warned: [], damage: ({ s1, s2 }) => (fs.rmSync(s1), fs.rmSync(s2)) },
  { name: 'snapshots/ directory deleted', loaded: null, warned: [], damage: ({ dir }) => fs.rmSync(path.join(dir, 'snapshots'), { recursive: true }) },
  ...[0, 7, 8, 12, 16, 23, 24, 32, 40, 48, 56, 59, 60, 63].map((at) => ({
    name: `S2 header byte ${at} flipped`,
    loaded: 's1',
    warned: ['s2'],
    damage: ({ s2 }) => flip(s2, at),
  })),
  ...['first', 'middle', 'last'].map((which) => ({
    name: `a byte of S2's ${which} entry flipped`,
    loaded: 's1',
    warned: ['s2'],
    damage: ({ s2 }) => {
      const n = (fs.statSync(s2).size - SNAPSHOT_HEADER) / SNAPSHOT_ENTRY
      const entry = which === 'first' ? 0 : which === 'middle' ? Math.floor(n / 2) : n - 1
      flip(s2, SNAPSHOT_HEADER + entry * SNAPSHOT_ENTRY + 9)
    },
  })),
  { name: 'S2 truncated by one byte', loaded: 's1', warned: ['s2'], damage: ({ s2 }) => fs.truncateSync(s2, fs.statSync(s2).size - 1) },
  { name: 'S2 truncated inside an entry', loaded: 's1', warned: ['s2'], damage: ({ s2 }) => fs.truncateSync(s2, SNAPSHOT_HEADER + 5 * SNAPSHOT_ENTRY + 11) },
  { name: 'S2 truncated to its header', loaded: 's1', warned: ['s2'], damage: ({ s2 }) => fs.truncateSync(s2, SNAPSHOT_HEADER) },
  { name: 'S2 truncated inside its header', loaded: 's1', warned: ['s2'], damage: ({ s2 }) => fs.truncateSync(s2, 40) },
  { name: 'S2 zero-length', loaded: 's1', warned: ['s2'], damage: ({ s2 }) => fs.truncateSync(s2, 0) },
  { name: 'S2 with 24 extra zero bytes', loaded: 's1', warned: ['s2'], damage: ({ s2 }) => fs.appendFileSync(s2, Buffer.alloc(SNAPSHOT_ENTRY)) },
  { name: 'S2 replaced by random bytes of the same size', loaded: 's1', warned: ['s2'], damage: ({ s2 }) => fs.writeFileSync(s2, crypto.randomBytes(fs.statSync(s2).size)) },
  { name: 'both S1 and S2 damaged', loaded: null, warned: ['s1', 's2'], damage: ({ s1, s2 }) => (flip(s1, 70), fs.truncateSync(s2, 0)) },
  {
    name: 'a garbage file named like a newer snapshot (inside the log)',
    loaded: 's2',
    warned: ['garbage'],
    damage: ({ dir, nextOffset }) => fs.writeFileSync(path.join(dir, 'snapshots', snapName(nextOffset - 1)), crypto.randomBytes(64 + 24 * 10)),
  },
  {
    name: 'a garbage file named like a snapshot beyond the end of the log',
    loaded: 's2',
    warned: ['garbage'],
    damage: ({ dir, nextOffset }) => fs.writeFileSync(path.join(dir, 'snapshots', snapName(nextOffset + 1000)), Buffer.from('not a snapshot')),
  },
  {
    name: 'an empty file named like the newest snapshot',
    loaded: 's2',
    warned: ['garbage'],
    damage: ({ dir, nextOffset }) => fs.writeFileSync(path.join(dir, 'snapshots', snapName(nextOffset)), Buffer.alloc(0)),
  },
  {
    name: 'leftover .tmp files (garbage, and a valid snapshot under a .tmp name)',
    loaded: 's2',
    warned: [],
    damage: ({ dir, s2, nextOffset }) => {
      fs.writeFileSync(path.join(dir, 'snapshots', `${snapName(nextOffset)}.tmp`), crypto.randomBytes(1000))
      fs.copyFileSync(s2, path.join(dir, 'snapshots', `${snapName(nextOffset - 1)}.tmp`))
    },
  },
  {
    name: 'a valid S2 under a later name (position disagrees with the name)',
    loaded: 's2',
    warned: ['garbage'],
    damage: ({ dir, s2, nextOffset }) => fs.copyFileSync(s2, path.join(dir, 'snapshots', snapName(nextOffset))),
  },
  {
    name: 'S2 claiming a position beyond the end of the log (name and CRCs consistent)',
    loaded: 's1',
    warned: ['moved'],
    damage: (c) => {
      const b = fs.readFileSync(c.s2)
      b.writeBigUInt64LE(BigInt(c.nextOffset + 5), 16)
      c.moved = path.join(c.dir, 'snapshots', snapName(c.nextOffset + 5))
      fs.writeFileSync(c.moved, resealSnapshot(b))
      fs.rmSync(c.s2)
    },
  },
  {
    name: "an S2 entry pointing at or past the snapshot's position (CRCs recomputed)",
    loaded: 's1',
    warned: ['s2'],
    damage: ({ s2 }) => {
      const b = fs.readFileSync(s2)
      b.writeBigUInt64LE(b.readBigUInt64LE(16), SNAPSHOT_HEADER + 8)
      fs.writeFileSync(s2, resealSnapshot(b))
    },
  },
  {
    name: "S2's live_bytes disagreeing with its entries (CRCs recomputed)",
    loaded: 's1',
    warned: ['s2'],
    damage: ({ s2 }) => {
      const b = fs.readFileSync(s2)
      b.writeBigUInt64LE(b.readBigUInt64LE(40) + 8n, 40)
      fs.writeFileSync(s2, resealSnapshot(b, { entries: false }))
    },
  },
  {
    name: "S2's entry count disagreeing with its size (CRC recomputed)",
    loaded: 's1',
    warned: ['s2'],
    damage: ({ s2 }) => {
      const b = fs.readFileSync(s2)
      b.writeBigUInt64LE(b.readBigUInt64LE(24) - 1n, 24)
      fs.writeFileSync(s2, resealSnapshot(b, { entries: false }))
    },
  },
  {
    name: 'S2 with an unknown format version (CRC recomputed)',
    loaded: 's1',
    warned: ['s2'],
    damage: ({ s2 }) => {
      const b = fs.readFileSync(s2)
      b.writeUInt32LE(2, 8)
      fs.writeFileSync(s2, resealSnapshot(b, { entries: false }))
    },
  },
]

function flip(file, at) {
  const b = fs.readFileSync(file)
  b[at] ^= 0x40
  fs.writeFileSync(file, b)
}

test('a damaged, missing, misnamed or garbage snapshot is skipped with a warning naming it, never deleted, and the store opens with the right contents', async (t) => {
  const base = await storeWithTwoSnapshots(t)
  const tally = []
  for (const c of SNAPSHOT_CASES) {
    const dir = tempDir(t)
    fs.cpSync(base.dir, dir, { recursive: true })
    const ctx = {
      dir,
      s1: path.join(dir, 'snapshots', path.basename(base.s1.path)),
      s2: path.join(dir, 'snapshots', path.basename(base.s2.path)),
      nextOffset: base.nextOffset,
    }
    const before = new Set(fs.existsSync(path.join(dir, 'snapshots')) ? fs.readdirSync(path.join(dir, 'snapshots')) : [])
    c.damage(ctx)
    const after = fs.existsSync(path.join(dir, 'snapshots')) ? fs.readdirSync(path.join(dir, 'snapshots')) : []
    // 'garbage': the file this case added.
    ctx.garbage = after.filter((n) => !before.has(n) && !n.endsWith('.tmp')).map((n) => path.join(dir, 'snapshots', n))[0]
    let store
    try {
      store = await Store.open(dir, base.options)
    } catch (err) {
      t.fail(`${c.name}: Store.open failed: ${err.stack}`)
      continue
    }
    try {
      const s = store.stats()
      const expectLoaded = c.loaded === null ? undefined : c.loaded === 's1' ? ctx.s1 : ctx.s2
      t.is(s.snapshot.loaded, expectLoaded, `${c.name}: the snapshot loaded`)
      const expectFrom = c.loaded === null ? 0 : c.loaded === 's1' ? base.s1.position : base.s2.position
      t.is(s.snapshot.replayedFrom, expectFrom, `${c.name}: replayed from`)
      t.is(s.snapshot.recordsReplayed, base.nextOffset - expectFrom, `${c.name}: records replayed`)
      const warnedFiles = c.warned.map((w) => ctx[w])
      t.is(s.warnings.length, warnedFiles.length, `${c.name}: ${s.warnings.length} warnings: ${JSON.stringify(s.warnings)}`)
      for (const file of warnedFiles) {
        t.true(file !== undefined && s.warnings.some((w) => w.includes(path.basename(file))), `${c.name}: a warning names ${file && path.basename(file)}: ${JSON.stringify(s.warnings)}`)
        // Never deleted; one ahead of the log is set aside as <name>.rejected (FORMAT.md
        // 10.3), so it cannot be trusted once new writes pass its position.
        const name = file && path.basename(file)
        const ahead = name !== undefined && Number(name.slice(0, 20)) > base.nextOffset
        t.true(file !== undefined && fs.existsSync(ahead ? `${file}.rejected` : file), `${c.name}: the bad snapshot ${file} was not deleted`)
        if (ahead) t.false(fs.existsSync(file), `${c.name}: ${file} was set aside`)
      }
      t.deepEqual(await contents(t, store), modelContents(base.model), `${c.name}: the contents`)
      t.is(s.keys, base.model.size, `${c.name}: stats().keys`)
      tally.push(`${c.name}: loaded ${c.loaded ?? 'none'}, replayed ${s.snapshot.recordsReplayed}${s.warnings.length ? `, warning: ${s.warnings[0].replace(dir, '<dir>')}` : ''}`)
      // The store keeps working: a write and a fresh snapshot, then a reopen loads it.
      store.put('after', 'damage')
      const fresh = await store.snapshot()
      await store.close()
      const again = await Store.open(dir, base.options)
      try {
        t.is(again.stats().snapshot.loaded, fresh.path, `${c.name}: the reopen loads the fresh snapshot`)
        t.is(again.stats().snapshot.recordsReplayed, 0, `${c.name}: nothing to replay after the fresh snapshot`)
        t.is(again.get('after'), 'damage')
        t.is(again.size, base.model.size + 1, `${c.name}: size after the reopen`)
      } finally {
        await again.close()
      }
    } finally {
      await store.close()
    }
  }
  t.log(`${SNAPSHOT_CASES.length} cases:\n  ${tally.join('\n  ')}`)
})

test('a snapshot older than a compaction is rejected (its records are gone), even when it is the only one left', async (t) => {
  const dir = tempDir(t)
  const options = { codec: codecs.utf8, segmentBytes: 64 << 10, snapshotEveryBytes: 0 }
  let store = await Store.open(dir, options)
  const model = new Map()
  for (let i = 0; i < 1000; i++) {
    store.put(i, `old ${i} ${'o'.repeat(100)}`)
    model.set(i, `old ${i} ${'o'.repeat(100)}`)
  }
  for (let i = 0; i < 100; i++) store.delete(i)
  for (let i = 0; i < 100; i++) model.delete(i)
  const old = await store.snapshot()
  const oldBytes = fs.readFileSync(old.path)
  // Overwrite most keys, then compact: the segments the old snapshot points into go.
  for (let i = 100; i < 900; i++) {
    store.put(i, `new ${i}`)
    model.set(i, `new ${i}`)
  }
  const result = await store.compact()
  t.true(result.segmentsRemoved > 0)
  const firstOffset = store.stats().firstOffset
  t.true(firstOffset > 0, 'compaction removed the first segments')
  const snaps = fs.readdirSync(path.join(dir, 'snapshots'))
  t.false(snaps.includes(path.basename(old.path)), 'compaction deleted the older snapshot')
  t.is(snaps.length, 1)
  await store.close()

  // Put the old snapshot back and break the compaction's snapshot: the old one must not
  // be trusted (10.3: an entry's offset below first_offset), the log alone is right.
  fs.writeFileSync(old.path, oldBytes)
  const compactionSnap = path.join(dir, 'snapshots', snaps[0])
  fs.truncateSync(compactionSnap, 10)
  store = await openStore(t, dir, options)
  const s = store.stats()
  t.is(s.snapshot.loaded, undefined, `loaded ${s.snapshot.loaded}`)
  t.true(
    s.warnings.some((w) => w.includes(path.basename(old.path))),
    `a warning names the stale snapshot: ${JSON.stringify(s.warnings)}`,
  )
  t.true(
    s.warnings.some((w) => w.includes(snaps[0])),
    `a warning names the damaged one: ${JSON.stringify(s.warnings)}`,
  )
  await checkContents(t, store, model, 'after the reopen from the log')
  t.log(s.warnings.map((w) => w.replace(dir, '<dir>')).join('\n'))
})

// ---------------------------------------------------------------------------------------
// Not a store; locks.

test('Store.open of a plain Log directory with records that are not store records fails with ERR_SEGLOG_CORRUPT and changes nothing', async (t) => {
  const payloads = {
    'text records': [Buffer.from('hello world'), Buffer.from('second')],
    'an empty record': [Buffer.alloc(0)],
    'an unknown key kind': [Buffer.from([1, 7, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8])],
    'a key length beyond the record': [Buffer.from([1, 1, 200, 0, 0x61, 0x62])],
    'an integer key of 4 bytes': [Buffer.from([1, 0, 4, 0, 1, 2, 3, 4])],
    'a string key of length 0': [Buffer.from([1, 1, 0, 0, 0x76])],
    'a valid PUT followed by junk': [Buffer.from([1, 1, 1, 0, 0x6b, 0x76]), Buffer.from([9, 9, 9])],
  }
  for (const [name, records] of Object.entries(payloads)) {
    const dir = tempDir(t)
    const log = await Log.open(dir, { segmentBytes: 64 << 10 })
    for (const r of records) log.append(r)
    await log.close()
    const err = await t.throwsAsync(Store.open(dir), undefined, name)
    t.is(err?.code, 'ERR_SEGLOG_CORRUPT', `${name}: ${err}`)
    t.false(fs.existsSync(path.join(dir, 'snapshots')) && fs.readdirSync(path.join(dir, 'snapshots')).length > 0, `${name}: no snapshot written`)
    // The lock was released and the log is untouched.
    const again = await Log.open(dir, { segmentBytes: 64 << 10 })
    t.is(again.nextOffset, records.length, `${name}: the log still holds its records`)
    t.deepEqual(
      [...again.records()].map((r) => Buffer.from(r.value).toString('hex')),
      records.map((r) => r.toString('hex')),
      `${name}: records unchanged`,
    )
    await again.close()
  }
  // A store whose log later gets a non-store record appended.
  const dir = tempDir(t)
  const store = await Store.open(dir, { codec: codecs.utf8 })
  store.put('k', 'v')
  await store.close()
  const log = await Log.open(dir)
  log.append(Buffer.from('junk'))
  await log.close()
  const err = await t.throwsAsync(Store.open(dir, { codec: codecs.utf8 }))
  t.is(err?.code, 'ERR_SEGLOG_CORRUPT', String(err))
  t.regex(err.message, /offset 1\b/, 'the error names the bad record')
})

test('one writer per directory: a second Store.open (or a Log.open) on an open store fails with ERR_SEGLOG_LOCKED; after close it succeeds', async (t) => {
  const dir = tempDir(t)
  const first = await Store.open(dir, { codec: codecs.utf8 })
  first.put('k', 'v')
  const err = await t.throwsAsync(Store.open(dir, { codec: codecs.utf8 }))
  t.is(err?.code, 'ERR_SEGLOG_LOCKED', String(err))
  const err2 = await t.throwsAsync(Log.open(dir))
  t.is(err2?.code, 'ERR_SEGLOG_LOCKED', String(err2))
  t.is(first.get('k'), 'v', 'the first store is unaffected')
  first.put('k2', 'v2')
  await first.close()
  const second = await openStore(t, dir, { codec: codecs.utf8 })
  t.is(second.get('k'), 'v')
  t.is(second.get('k2'), 'v2')
  // And a Log holding the directory keeps a Store out.
  await second.close()
  const log = await Log.open(dir)
  const err3 = await t.throwsAsync(Store.open(dir))
  t.is(err3?.code, 'ERR_SEGLOG_LOCKED', String(err3))
  await log.close()
})

// ---------------------------------------------------------------------------------------
// Space.

test('space: 10 000 keys overwritten 100 times (100-byte values) and compacted fit in twice the live data', async (t) => {
  const dir = tempDir(t)
  const options = { segmentBytes: 256 << 10, durability: 'none' }
  const store = await openStore(t, dir, options)
  const KEYS = 10_000
  const ROUNDS = 100
  const value = Buffer.alloc(100)
  const valueFor = (key, round) => {
    value.fill(round & 0xff)
    value.writeUInt32LE(key, 0)
    value.writeUInt32LE(round, 4)
    return value
  }
  let peak = 0
  for (let round = 0; round < ROUNDS; round++) {
    for (let key = 0; key < KEYS; key++) store.put(key, valueFor(key, round))
    // Compact now and then as a long-running store would (the figures below are after the last one).
    if (round % 25 === 24) {
      peak = Math.max(peak, directoryBytes(dir).total)
      await store.compact()
    }
  }
  await store.compact()
  const s = store.stats()
  const disk = directoryBytes(dir)
  t.log(
    `after ${KEYS * ROUNDS} puts and compaction: live ${s.liveBytes} bytes (${s.keys} keys), log ${s.logBytes}, garbage ${s.garbageBytes}, ` +
      `directory ${disk.total} bytes in ${disk.files} files (segments ${disk.segments} in ${s.segments}, indexes ${disk.indexes}, snapshots ${disk.snapshots}, other ${disk.other}); ` +
      `ratio ${(disk.total / s.liveBytes).toFixed(2)}; peak before a compaction ${peak} bytes; stats().fileBytes ${s.fileBytes}`,
  )
  t.is(s.keys, KEYS)
  t.true(s.liveBytes >= KEYS * 100, `liveBytes ${s.liveBytes} counts at least the values`)
  t.true(disk.total <= 2 * s.liveBytes, `the directory holds ${disk.total} bytes, more than twice the live data (${s.liveBytes})`)
  for (let key = 0; key < KEYS; key += 97) t.true(Buffer.from(store.get(key)).equals(valueFor(key, ROUNDS - 1)), `get(${key})`)
  await store.close()
  const again = await openStore(t, dir, options)
  t.is(again.size, KEYS)
  let bad = 0
  for (let key = 0; key < KEYS; key++) if (!Buffer.from(again.get(key)).equals(valueFor(key, ROUNDS - 1))) bad++
  t.is(bad, 0, 'every key holds its last value after reopen')
  const disk2 = directoryBytes(dir)
  t.log(`after reopen: directory ${disk2.total} bytes, live ${again.stats().liveBytes}`)
  t.true(disk2.total <= 2 * again.stats().liveBytes)
})
