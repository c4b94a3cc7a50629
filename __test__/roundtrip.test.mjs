// Guards against values that change on the way to disk and back: every codec through
// every read path (get, readBatch, records, read), across segment rolls and close +
// reopen, with dense offsets, the timestamps that were given, and segments(), verify()
// and the recovery report agreeing with what was written.
import { isDeepStrictEqual } from 'node:util'

import test from 'ava'

import { Log, codecs } from '../dist/index.mjs'
import { openLog, tempDir } from './helpers/temp.mjs'

const SEGMENT_BYTES = 64 << 10
const DEFAULT_TS = 'default timestamp (the time of the append)'

/**
 * Appends `values` mixing single appends and batches of various sizes, with explicit
 * timestamps for some calls and the default for others. Returns what each record should
 * read back as: `{ offset, timestamp, value }` where `timestamp` is a number or, for
 * defaults, `{ min, max }` (Date.now() around the call).
 */
function writeAll(t, log, values, { copy, encodedBytes, firstOffset = 0 }) {
  const expected = []
  const batchSizes = [1, 3, 1, 1, 8, 2, 1, 17, 1, 5]
  let call = 0
  for (let i = 0; i < values.length; call++) {
    const explicit = call % 3 !== 1
    const timestamp = call === 0 ? 0 : call === 1 ? undefined : call === 2 ? 2 ** 53 - 1 : explicit ? 1_500_000_000_000 + call * 1000 : undefined
    let count = batchSizes[call % batchSizes.length]
    // An atomic batch must fit in one segment: big values go alone.
    let batchBytes = 0
    for (let j = 0; j < count && i + j < values.length; j++) batchBytes += encodedBytes(values[i + j]) + 32
    if (batchBytes > SEGMENT_BYTES / 2) count = 1
    const chunk = values.slice(i, i + count)
    const useBatch = count > 1 || call % 4 === 0
    const min = Date.now()
    const first = useBatch ? log.appendBatch(chunk, timestamp) : log.append(chunk[0], timestamp)
    const max = Date.now()
    t.is(first, firstOffset + i, `call ${call} returns the offset of its first record`)
    for (const v of chunk) {
      expected.push({ offset: firstOffset + expected.length, timestamp: timestamp ?? { min, max }, value: copy(v) })
    }
    i += chunk.length
  }
  return expected
}

/**
 * Replaces a default timestamp by DEFAULT_TS when it lies within 1 s of its call, and
 * each value by `view(value)`.
 */
function normalize(records, expected, view = (v) => v) {
  return records.map((r) => {
    const want = expected[r.offset]?.timestamp
    const isDefault = want && typeof want === 'object' && r.timestamp >= want.min - 1000 && r.timestamp <= want.max + 1000
    return { offset: r.offset, timestamp: isDefault ? DEFAULT_TS : r.timestamp, value: view(r.value) }
  })
}

/** Raw values compared as bytes: `get` gives Buffers, iteration gives Uint8Array views. */
const bytesView = (v) => (v instanceof Uint8Array ? Buffer.from(v.buffer, v.byteOffset, v.byteLength) : v)

function expectedView(expected) {
  return expected.map((e) => ({ offset: e.offset, timestamp: typeof e.timestamp === 'object' ? DEFAULT_TS : e.timestamp, value: e.value }))
}

/** t.deepEqual, with a fast check first: concordance is slow on thousands of large Buffers. */
function sameRecords(t, actual, expected, message) {
  if (isDeepStrictEqual(actual, expected)) t.pass(message)
  else t.deepEqual(actual, expected, message)
}

async function collect(iterable) {
  const out = []
  for await (const r of iterable) out.push(r)
  return out
}

/** Reads the whole log through every read path and compares with `expected`. */
async function checkAll(t, log, expected, label, { view, checkGet, checkIterated } = {}) {
  const n = expected.length
  const want = expectedView(expected)
  t.is(log.firstOffset, 0, `${label}: firstOffset`)
  t.is(log.nextOffset, n, `${label}: nextOffset`)

  const viaGet = []
  for (let o = 0; o < n; o++) viaGet.push(log.get(o))
  sameRecords(t, normalize(viaGet, expected, view), want, `${label}: get`)
  if (checkGet) t.true(viaGet.every((r) => checkGet(r.value)), `${label}: type of values from get`)
  t.is(log.get(n), undefined, `${label}: get(nextOffset)`)

  const viaBatch = []
  for (let from = 0; ; ) {
    const batch = log.readBatch(from, { maxRecords: 7 })
    if (batch.length === 0) break
    t.true(batch.length <= 7)
    viaBatch.push(...batch)
    from += batch.length
  }
  sameRecords(t, normalize(viaBatch, expected, view), want, `${label}: readBatch pages of 7`)
  const defaultBatches = []
  for (let from = 0; from < n; ) {
    const batch = log.readBatch(from)
    t.true(batch.length > 0)
    defaultBatches.push(...batch)
    from += batch.length
  }
  sameRecords(t, normalize(defaultBatches, expected, view), want, `${label}: readBatch defaults`)
  // maxBytes is soft: at least one record, even a record larger than maxBytes.
  for (let o = 0; o < Math.min(n, 40); o++) {
    sameRecords(t, normalize(log.readBatch(o, { maxBytes: 1 }), expected, view), [want[o]], `${label}: readBatch(${o}, { maxBytes: 1 })`)
  }
  t.deepEqual(log.readBatch(n), [], `${label}: readBatch at nextOffset`)
  t.deepEqual(log.readBatch(0, { maxRecords: 0 }), [])

  const iterated = [...log.records()]
  sameRecords(t, normalize(iterated, expected, view), want, `${label}: records()`)
  if (checkIterated) t.true([...iterated, ...viaBatch].every((r) => checkIterated(r.value)), `${label}: type of values from iteration`)
  sameRecords(t, normalize(await collect(log.read()), expected, view), want, `${label}: read()`)
  const ranges = [
    [0, n],
    [1, n - 1],
    [Math.floor(n / 3), Math.floor((2 * n) / 3)],
    [n - 1, n + 100],
    [5, 5],
    [n, n + 10],
  ]
  for (const [from, to] of ranges) {
    const slice = want.slice(from, Math.min(to, n))
    sameRecords(t, normalize([...log.records({ from, to })], expected, view), slice, `${label}: records({ from: ${from}, to: ${to} })`)
    sameRecords(t, normalize(await collect(log.read({ from, to })), expected, view), slice, `${label}: read({ from: ${from}, to: ${to} })`)
  }
  sameRecords(t, normalize([...log.records({ from: n - 3 })], expected, view), want.slice(n - 3), `${label}: records({ from })`)
  sameRecords(t, normalize(await collect(log.read({ to: 3 })), expected, view), want.slice(0, 3), `${label}: read({ to })`)

  const segments = log.segments()
  t.is(segments[0].baseOffset, 0, `${label}: first segment starts at 0`)
  for (let i = 1; i < segments.length; i++) {
    t.is(segments[i].baseOffset, segments[i - 1].nextOffset, `${label}: segment ${i} starts where ${i - 1} ends`)
  }
  t.is(segments.at(-1).nextOffset, n, `${label}: last segment ends at nextOffset`)
  t.is(
    segments.reduce((sum, s) => sum + s.records, 0),
    n,
    `${label}: segment record counts add up`,
  )
  for (const s of segments) {
    t.is(s.records, s.nextOffset - s.baseOffset)
    t.is(s.fileBytes, SEGMENT_BYTES)
    t.true(s.dataBytes >= 64 && s.dataBytes <= s.fileBytes)
  }
  const report = await log.verify()
  t.true(report.ok, `${label}: verify ${JSON.stringify(report.problem)}`)
  t.is(report.records, n, `${label}: verify counts every record`)
  t.is(report.segments, segments.length)
  t.is(report.firstOffset, 0)
  t.is(report.nextOffset, n)
  return segments.length
}

/** Writes, checks, reopens, checks, appends more, reopens, checks. */
async function roundTrip(t, { codec, values, moreValues, copy, encodedBytes, minSegments, ...checks }) {
  const dir = tempDir(t)
  const options = codec ? { codec, segmentBytes: SEGMENT_BYTES } : { segmentBytes: SEGMENT_BYTES }
  let log = await Log.open(dir, options)
  const expected = writeAll(t, log, values, { copy, encodedBytes })
  const segmentCount = await checkAll(t, log, expected, 'while open', checks)
  t.true(segmentCount >= minSegments, `wrote ${segmentCount} segments, want at least ${minSegments}`)
  await log.close()

  log = await openLog(t, dir, options)
  t.is(log.recovery.truncation, undefined, 'a clean reopen truncates nothing')
  t.deepEqual(log.recovery.indexesRebuilt, [], 'a clean close leaves every index valid')
  t.deepEqual(log.recovery.tempFilesRemoved, [])
  await checkAll(t, log, expected, 'after reopen', checks)

  expected.push(...writeAll(t, log, moreValues, { copy, encodedBytes, firstOffset: expected.length }))
  await checkAll(t, log, expected, 'after appending to the reopened log', checks)
  await log.close()

  log = await openLog(t, dir, options)
  t.is(log.recovery.truncation, undefined)
  await checkAll(t, log, expected, 'after the second reopen', checks)
}

function patternBytes(length, seed) {
  const b = new Uint8Array(length)
  for (let i = 0; i < length; i++) b[i] = (seed * 131 + i * 7 + (i >> 8)) & 0xff
  return b
}

test('raw codec: Uint8Array in; Buffer from get, Uint8Array from iteration; from empty to exactly maxRecordBytes, across rolls and reopens', async (t) => {
  const probe = await Log.open(tempDir(t), { segmentBytes: SEGMENT_BYTES })
  const max = probe.maxRecordBytes
  await probe.close()
  // FORMAT.md 3: the default is capped to what fits in an empty segment (64-byte header, 28-byte frame header).
  t.true(max <= SEGMENT_BYTES - 64 - 28 && max > SEGMENT_BYTES - 64 - 28 - 8, `default maxRecordBytes ${max} is what fits in a segment`)

  const backing = patternBytes(5000, 99)
  const values = [new Uint8Array(0), patternBytes(max, 1), Buffer.from('buffer in'), new Uint8Array(backing.buffer, 3, 10)]
  for (let i = 0; i < 1200; i++) {
    if (i % 200 === 50) values.push(patternBytes(max, i))
    else if (i % 97 === 0) values.push(new Uint8Array(0))
    else if (i % 5 === 0) values.push(new Uint8Array(backing.buffer, i % 1000, (i * 37) % 3000))
    else values.push(patternBytes((i * 7919) % 2000, i))
  }
  const moreValues = [patternBytes(max, 7), new Uint8Array(0), patternBytes(10, 3)]
  await roundTrip(t, {
    values,
    moreValues,
    copy: (v) => Buffer.from(v),
    encodedBytes: (v) => v.length,
    minSegments: 20,
    view: bytesView,
    checkGet: (v) => Buffer.isBuffer(v),
    checkIterated: (v) => v instanceof Uint8Array,
  })
})

test('raw codec: a single max-size record fits in an atomic batch of its own', async (t) => {
  const log = await openLog(t, tempDir(t), { segmentBytes: SEGMENT_BYTES })
  log.append(patternBytes(100, 1))
  const big = patternBytes(log.maxRecordBytes, 2)
  t.is(log.appendBatch([big], 42), 1)
  t.deepEqual(log.get(1), { offset: 1, timestamp: 42, value: Buffer.from(big) })
  t.is(log.segments().length, 2)
})

test('appendBatch([]) writes nothing and returns nextOffset', async (t) => {
  const log = await openLog(t, tempDir(t), { segmentBytes: SEGMENT_BYTES })
  t.is(log.appendBatch([]), 0)
  log.append(Buffer.from('a'))
  t.is(log.appendBatch([], 7), 1)
  t.is(log.nextOffset, 1)
  t.is((await log.verify()).records, 1)
})

test('utf8 codec: non-ASCII and empty strings, across rolls and reopens', async (t) => {
  const samples = ['', 'hello', 'héllo wörld', 'Ελληνικά', '日本語のテキスト', '🦀🚀 emoji 👍🏽', 'a\u0000b', 'e\u0301 combining', '\u200b zero width', 'tab\tnewline\n']
  const values = []
  for (let i = 0; i < 1500; i++) values.push(i % 50 === 0 ? '' : `${samples[i % samples.length]} #${i} `.repeat(1 + (i % 23)))
  values.push('x'.repeat(20000), '')
  await roundTrip(t, {
    codec: codecs.utf8,
    values: [...samples, ...values],
    moreValues: ['after reopen ✓', ''],
    copy: (v) => v,
    encodedBytes: (v) => Buffer.byteLength(v),
    minSegments: 5,
  })
})

test('json codec: objects, arrays, numbers, null, nested, across rolls and reopens', async (t) => {
  const samples = [
    null,
    0,
    -1.5,
    1e300,
    Number.MAX_SAFE_INTEGER,
    true,
    false,
    '',
    'string ✓',
    [],
    {},
    [1, 'two', null, { three: [3] }],
    { a: 1, b: [1, 2, { c: null }], 'ключ': 'значение', nested: { deep: { deeper: { deepest: [[[]]] } } } },
  ]
  const values = [...samples]
  for (let i = 0; i < 1600; i++) {
    values.push(i % 4 === 0 ? [i, `item ${i}`, { even: i % 2 === 0 }] : { id: i, name: `record ${i}`, tags: Array.from({ length: i % 30 }, (_, k) => `tag-${k}-${i}`), score: i / 8, parent: i % 3 ? null : { id: i - 1 } })
  }
  await roundTrip(t, {
    codec: codecs.json,
    values,
    moreValues: [{ after: 'reopen' }, null, [0]],
    copy: (v) => structuredClone(v),
    encodedBytes: (v) => Buffer.byteLength(JSON.stringify(v)),
    minSegments: 5,
  })
})

/** A custom codec: { x: int32, y: float64, label: string } as bytes (a plain Uint8Array). */
const pointCodec = {
  encode(p) {
    const label = new TextEncoder().encode(p.label)
    const bytes = new Uint8Array(12 + label.length)
    const view = new DataView(bytes.buffer)
    view.setInt32(0, p.x, true)
    view.setFloat64(4, p.y, true)
    bytes.set(label, 12)
    return bytes
  },
  decode(bytes) {
    if (!(bytes instanceof Uint8Array)) throw new TypeError('decode expects a Uint8Array')
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    return { x: view.getInt32(0, true), y: view.getFloat64(4, true), label: new TextDecoder().decode(bytes.subarray(12)) }
  },
}

test('custom codec { encode, decode }: across rolls and reopens', async (t) => {
  const values = []
  for (let i = 0; i < 1500; i++) values.push({ x: i - 700, y: i / 3, label: `point ${i} ✓ `.repeat(i % 40) })
  await roundTrip(t, {
    codec: pointCodec,
    values,
    moreValues: [{ x: -1, y: -0.5, label: '' }],
    copy: (v) => ({ ...v }),
    encodedBytes: (v) => pointCodec.encode(v).length,
    minSegments: 5,
  })
})

test('custom codec: decode receives bytes it may keep (later reads do not change them)', async (t) => {
  const kept = []
  const keeping = {
    encode: (v) => v,
    decode: (bytes) => {
      kept.push(bytes)
      return bytes
    },
  }
  const log = await openLog(t, tempDir(t), { codec: keeping, segmentBytes: SEGMENT_BYTES })
  const values = []
  for (let i = 0; i < 300; i++) values.push(patternBytes(1 + ((i * 37) % 900), i))
  for (const v of values) log.append(v)
  const fromGet = values.map((_, i) => log.get(i).value)
  const fromBatch = log.readBatch(0, { maxRecords: 300, maxBytes: 1 << 20 }).map((r) => r.value)
  const fromRecords = [...log.records()].map((r) => r.value)
  // Read everything again so any reused buffer would be overwritten.
  for (let i = 299; i >= 0; i--) log.get(i)
  ;[...log.records()]
  const want = values.map((v) => Buffer.from(v))
  const asBuffers = (list) => list.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength))
  t.deepEqual(asBuffers(fromGet), want, 'values decoded by get')
  t.deepEqual(asBuffers(fromBatch), want, 'values decoded by readBatch')
  t.deepEqual(asBuffers(fromRecords), want, 'values decoded by records()')
  t.true(kept.length >= 900)
})

test('default timestamps are the time of the append; explicit ones are kept, including 0 and 2^53-1', async (t) => {
  const log = await openLog(t, tempDir(t), { codec: codecs.utf8, segmentBytes: SEGMENT_BYTES })
  const before = Date.now()
  log.append('now')
  log.appendBatch(['now 1', 'now 2'])
  const after = Date.now()
  log.append('zero', 0)
  log.append('max', 2 ** 53 - 1)
  log.appendBatch(['b1', 'b2', 'b3'], 1234)
  const records = [...log.records()]
  for (const r of records.slice(0, 3)) {
    t.true(r.timestamp >= before - 1000 && r.timestamp <= after + 1000, `default timestamp ${r.timestamp} is near Date.now() (${before}..${after})`)
  }
  t.deepEqual(
    records.slice(3).map((r) => [r.offset, r.timestamp, r.value]),
    [
      [3, 0, 'zero'],
      [4, 2 ** 53 - 1, 'max'],
      [5, 1234, 'b1'],
      [6, 1234, 'b2'],
      [7, 1234, 'b3'],
    ],
  )
  const [segment] = log.segments()
  t.is(segment.minTimestamp, 0)
  t.is(segment.maxTimestamp, 2 ** 53 - 1)
})

test('segments() of an empty log: one empty segment at 0; verify ok with 0 records', async (t) => {
  const log = await openLog(t, tempDir(t), { segmentBytes: SEGMENT_BYTES })
  t.is(log.nextOffset, 0)
  t.is(log.firstOffset, 0)
  const segments = log.segments()
  t.is(segments.length, 1)
  t.like(segments[0], { baseOffset: 0, nextOffset: 0, records: 0, fileBytes: SEGMENT_BYTES })
  t.is(segments[0].minTimestamp, undefined)
  t.deepEqual([...log.records()], [])
  t.deepEqual(log.readBatch(0), [])
  t.is(log.get(0), undefined)
  const report = await log.verify()
  t.true(report.ok)
  t.is(report.records, 0)
})
