// Guards against bad input that corrupts or partly writes the log, or fails with an
// unclear error: every wrong type or out-of-range value is a TypeError/RangeError with a
// stable code, and afterwards the log holds exactly the records it held before.
import fs from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { Log, codecs } from '../dist/index.mjs'
import { openLog, tempDir } from './helpers/temp.mjs'

const SEGMENT_BYTES = 64 << 10
const BAD_NUMBERS = [NaN, Infinity, -Infinity, -1, 1.5, 2 ** 53, -0.5, Number.MAX_VALUE]
const NOT_NUMBERS = ['1', null, {}, [], 1n, true]

/** A comparable form of a record: values as hex (bytes) or JSON. */
const recordKey = (r) => [r.offset, r.timestamp, r.value instanceof Uint8Array ? `bytes:${Buffer.from(r.value).toString('hex')}` : JSON.stringify(r.value)]

/**
 * Snapshots what `log` holds now and returns checks that a call fails as expected and
 * leaves the log holding exactly that: same records, verify() ok.
 */
async function guard(t, log) {
  const before = [...log.records()].map(recordKey)
  const intact = async (what) => {
    t.is(log.nextOffset, before.length, `${what}: nextOffset unchanged`)
    t.deepEqual([...log.records()].map(recordKey), before, `${what}: records unchanged`)
    const report = await log.verify()
    t.true(report.ok, `${what}: verify ok`)
    t.is(report.records, before.length, `${what}: verify counts the same records`)
  }
  return {
    intact,
    /** `fn` throws an error matching `expectation`, and nothing changed. Returns the error. */
    async rejects(fn, expectation, what) {
      const err = t.throws(fn, expectation, what)
      await intact(what)
      return err
    },
    async rejectsAsync(fn, expectation, what) {
      const err = await t.throwsAsync(fn, expectation, what)
      await intact(what)
      return err
    },
  }
}

/** A raw log holding three known records, with `guard` checks for it. */
async function logWithThreeRecords(t, options = {}) {
  const log = await openLog(t, tempDir(t), { segmentBytes: SEGMENT_BYTES, ...options })
  log.append(Buffer.from('first'), 10)
  log.appendBatch([Buffer.alloc(0), Buffer.from('third')], 20)
  t.deepEqual(
    [...log.records()].map((r) => [r.offset, r.timestamp, Buffer.from(r.value).toString()]),
    [
      [0, 10, 'first'],
      [1, 20, ''],
      [2, 20, 'third'],
    ],
  )
  return { log, ...(await guard(t, log)) }
}

const describe = (v) => (typeof v === 'bigint' ? `${v}n` : typeof v === 'string' ? JSON.stringify(v) : Array.isArray(v) ? '[]' : String(v))

test('append of a non-Uint8Array with the raw codec: TypeError ERR_INVALID_ARG_TYPE, nothing written', async (t) => {
  const { log, rejects } = await logWithThreeRecords(t)
  const bad = ['a string', '', 42, 0, null, undefined, {}, { length: 3 }, [1, 2, 3], new Uint16Array(4), new ArrayBuffer(4), new DataView(new ArrayBuffer(4)), Symbol('s'), 1n]
  const type = { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }
  for (const value of bad) {
    const err = await rejects(() => log.append(value), type, `append(${typeof value})`)
    t.regex(err.message, /Uint8Array/)
    await rejects(() => log.append(value, 5), type, `append(${typeof value}, 5)`)
    await rejects(() => log.appendBatch([value]), type, `appendBatch([${typeof value}])`)
  }
})

test('bad offsets and timestamps: RangeError for NaN, Infinity, negatives, fractions, 2^53; TypeError for non-numbers', async (t) => {
  const { log, rejects, rejectsAsync } = await logWithThreeRecords(t)
  const ok = Buffer.from('never written')
  const range = { instanceOf: RangeError, code: 'ERR_SEGLOG_INVALID_ARGUMENT' }
  for (const v of BAD_NUMBERS) {
    await rejects(() => log.get(v), range, `get(${v})`)
    await rejects(() => log.append(ok, v), range, `append(value, ${v})`)
    await rejects(() => log.appendBatch([ok, ok], v), range, `appendBatch(values, ${v})`)
    await rejects(() => log.readBatch(v), range, `readBatch(${v})`)
    await rejects(() => log.readBatch(0, { maxRecords: v }), range, `readBatch maxRecords ${v}`)
    await rejects(() => log.readBatch(0, { maxBytes: v }), range, `readBatch maxBytes ${v}`)
    await rejects(() => [...log.records({ from: v })], range, `records({ from: ${v} })`)
    await rejects(() => [...log.records({ to: v })], range, `records({ to: ${v} })`)
    await rejectsAsync(() => log.read({ from: v }).next(), range, `read({ from: ${v} })`)
    await rejectsAsync(() => log.read({ to: v }).next(), range, `read({ to: ${v} })`)
  }
  const type = { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }
  for (const v of NOT_NUMBERS) {
    await rejects(() => log.get(v), type, `get(${describe(v)})`)
    await rejects(() => log.append(ok, v), type, `append(value, ${describe(v)})`)
    await rejects(() => log.appendBatch([ok], v), type, `appendBatch(values, ${describe(v)})`)
    await rejects(() => log.readBatch(v), type, `readBatch(${describe(v)})`)
    await rejects(() => [...log.records({ from: v })], type, `records({ from: ${describe(v)} })`)
  }
  await rejects(() => log.get(), type, 'get() with no offset')
  await rejects(() => [...log.records(null)], { instanceOf: TypeError }, 'records(null)')
})

test('the largest valid numbers are accepted: timestamp 2^53-1, get(2^53-1) is undefined', async (t) => {
  const { log } = await logWithThreeRecords(t)
  t.is(log.get(2 ** 53 - 1), undefined)
  t.deepEqual(log.readBatch(2 ** 53 - 1), [])
  t.deepEqual([...log.records({ from: 3, to: 2 ** 53 - 1 })], [])
  t.is(log.append(Buffer.from('x'), 2 ** 53 - 1), 3)
  t.is(log.get(3).timestamp, 2 ** 53 - 1)
})

test('get and reads past nextOffset return undefined / nothing', async (t) => {
  const { log, intact } = await logWithThreeRecords(t)
  t.is(log.get(3), undefined)
  t.is(log.get(1000), undefined)
  t.deepEqual(log.readBatch(3), [])
  t.deepEqual(log.readBatch(500), [])
  t.deepEqual([...log.records({ from: 3 })], [])
  t.deepEqual([...log.records({ from: 10, to: 20 })], [])
  await intact('after reads past the end')
})

test('an empty payload is valid, not an error', async (t) => {
  const log = await openLog(t, tempDir(t), { segmentBytes: SEGMENT_BYTES })
  t.is(log.append(new Uint8Array(0)), 0)
  t.is(log.appendBatch([new Uint8Array(0), Buffer.alloc(0)]), 1)
  t.is(log.get(0).value.length, 0)
  t.is(log.nextOffset, 3)
  t.true((await log.verify()).ok)
})

test('a payload of maxRecordBytes + 1: RangeError ERR_SEGLOG_RECORD_TOO_LARGE, nothing written', async (t) => {
  const { log, rejects } = await logWithThreeRecords(t)
  const tooLarge = { instanceOf: RangeError, code: 'ERR_SEGLOG_RECORD_TOO_LARGE' }
  const tooBig = new Uint8Array(log.maxRecordBytes + 1)
  const err = await rejects(() => log.append(tooBig), tooLarge, 'append')
  t.regex(err.message, new RegExp(`${log.maxRecordBytes + 1}.*${log.maxRecordBytes}`))
  await rejects(() => log.appendBatch([Buffer.from('ok'), tooBig]), tooLarge, 'appendBatch')

  const small = await openLog(t, tempDir(t), { segmentBytes: SEGMENT_BYTES, maxRecordBytes: 100 })
  t.is(small.maxRecordBytes, 100)
  t.is(small.append(new Uint8Array(100)), 0)
  await (await guard(t, small)).rejects(() => small.append(new Uint8Array(101)), tooLarge, 'maxRecordBytes: 100')
  const utf8 = await openLog(t, tempDir(t), { segmentBytes: SEGMENT_BYTES, maxRecordBytes: 4, codec: codecs.utf8 })
  t.is(utf8.append('ab'), 0)
  await (await guard(t, utf8)).rejects(() => utf8.append('✓✓'), tooLarge, 'the limit is on encoded bytes (6), not characters (2)')
})

test('appendBatch with a non-array: TypeError, nothing written', async (t) => {
  const { log, rejects } = await logWithThreeRecords(t)
  for (const v of ['abc', Buffer.from('abc'), null, undefined, 42, { length: 1, 0: Buffer.from('x') }, new Set([Buffer.from('x')])]) {
    await rejects(() => log.appendBatch(v), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }, `appendBatch(${typeof v})`)
  }
})

test('appendBatch with one bad element: error, and none of the batch is written', async (t) => {
  const { log, rejects } = await logWithThreeRecords(t)
  const good = () => Buffer.from('good')
  const cases = [
    [[good(), 'bad', good()], TypeError],
    [[good(), good(), null], TypeError],
    [['bad', good()], TypeError],
    [[good(), undefined], TypeError],
    // Sparse array: a hole is not a Uint8Array.
    [[good(), , good()], TypeError], // eslint-disable-line no-sparse-arrays
    [[good(), new Uint8Array(log.maxRecordBytes + 1)], RangeError],
  ]
  for (const [batch, instanceOf] of cases) {
    await rejects(() => log.appendBatch(batch), { instanceOf }, `batch of ${batch.length} with a bad element`)
  }
})

test('appendBatch larger than a segment: ERR_SEGLOG_BATCH_TOO_LARGE, nothing written, the log still works', async (t) => {
  const { log, rejects } = await logWithThreeRecords(t)
  const third = new Uint8Array(Math.floor(SEGMENT_BYTES / 3))
  const err = await rejects(() => log.appendBatch([third, third, third, third]), { code: 'ERR_SEGLOG_BATCH_TOO_LARGE' }, 'four thirds of a segment')
  t.true(err instanceof Error)
  t.regex(err.message, /segment/)
  // Each record fits alone, but together they do not.
  const many = Array.from({ length: 3000 }, () => new Uint8Array(20))
  await rejects(() => log.appendBatch(many), { code: 'ERR_SEGLOG_BATCH_TOO_LARGE' }, '3000 small records')
  t.is(log.appendBatch([third, third]), 3, 'a batch that fits is still accepted')
  t.is(log.nextOffset, 5)
  t.true((await log.verify()).ok)
})

test('json codec rejects undefined, functions, symbols, BigInt and cycles with TypeError; nothing written', async (t) => {
  const log = await openLog(t, tempDir(t), { segmentBytes: SEGMENT_BYTES, codec: codecs.json })
  log.append({ keep: 1 })
  log.appendBatch([[2], 'three'])
  t.deepEqual([...log.records()].map((r) => r.value), [{ keep: 1 }, [2], 'three'])
  const { rejects } = await guard(t, log)
  const circular = { name: 'loop' }
  circular.self = circular
  const bad = [undefined, () => 1, Symbol('s'), 10n, { nested: { big: 1n } }, circular, [1, [2, circular]]]
  const type = { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }
  for (const value of bad) {
    await rejects(() => log.append(value), type, `append(${typeof value})`)
    await rejects(() => log.appendBatch([{ ok: true }, value]), type, `appendBatch([ok, ${typeof value}])`)
  }
})

test('utf8 codec rejects non-strings with TypeError; nothing written', async (t) => {
  const log = await openLog(t, tempDir(t), { segmentBytes: SEGMENT_BYTES, codec: codecs.utf8 })
  log.append('kept')
  const { rejects } = await guard(t, log)
  const type = { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }
  for (const value of [42, null, undefined, Buffer.from('bytes'), {}, ['a']]) {
    await rejects(() => log.append(value), type, `append(${typeof value})`)
    await rejects(() => log.appendBatch(['ok', value]), type, `appendBatch(['ok', ${typeof value}])`)
  }
  t.is(log.get(0).value, 'kept')
})

test('a custom codec whose encode returns a non-Uint8Array: TypeError; an encode that throws: its error; nothing written', async (t) => {
  const type = { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }
  const stringCodec = { encode: (v) => `${v}`, decode: (b) => b }
  const log = await openLog(t, tempDir(t), { segmentBytes: SEGMENT_BYTES, codec: stringCodec })
  const g = await guard(t, log)
  await g.rejects(() => log.append('x'), type, 'encode returns a string')
  await g.rejects(() => log.appendBatch(['x', 'y']), type, 'encode returns strings in a batch')
  t.is(log.nextOffset, 0)

  const boom = new Error('encode failed')
  const picky = {
    encode: (v) => {
      if (v === 'bad') throw boom
      if (v === 'number') return 42
      return Buffer.from(v)
    },
    decode: (b) => Buffer.from(b).toString(),
  }
  const log2 = await openLog(t, tempDir(t), { segmentBytes: SEGMENT_BYTES, codec: picky })
  log2.append('kept')
  const g2 = await guard(t, log2)
  t.is(await g2.rejects(() => log2.appendBatch(['a', 'bad', 'c']), { is: boom }, 'encode throws mid-batch'), boom)
  await g2.rejects(() => log2.appendBatch(['a', 'number']), type, 'encode returns a number mid-batch')
  await g2.rejects(() => log2.append('bad'), { is: boom }, 'encode throws')
  t.deepEqual([...log2.records()].map((r) => r.value), ['kept'])
})

test('invalid open arguments and options: TypeError/RangeError, and an existing log is left intact and unlocked', async (t) => {
  const dir = tempDir(t)
  const seed = await Log.open(dir, { segmentBytes: SEGMENT_BYTES, codec: codecs.utf8 })
  seed.append('survives')
  await seed.close()

  const cases = [
    [{ segmentBytes: 10 }, RangeError, /segmentBytes/],
    [{ segmentBytes: 4095 }, RangeError, /segmentBytes/],
    [{ segmentBytes: 2 ** 32 }, RangeError, /segmentBytes/],
    [{ segmentBytes: 'x' }, TypeError, /segmentBytes/],
    [{ segmentBytes: NaN }, RangeError, /segmentBytes/],
    [{ segmentBytes: -65536 }, RangeError, /segmentBytes/],
    [{ segmentBytes: 65536.5 }, RangeError, /segmentBytes/],
    [{ segmentBytes: SEGMENT_BYTES, maxRecordBytes: SEGMENT_BYTES }, RangeError, /maxRecordBytes/],
    [{ segmentBytes: SEGMENT_BYTES, maxRecordBytes: '1' }, TypeError, /maxRecordBytes/],
    [{ indexIntervalBytes: 1 }, RangeError, /indexIntervalBytes/],
    [{ segmentBytes: SEGMENT_BYTES, indexIntervalBytes: SEGMENT_BYTES + 1 }, RangeError, /indexIntervalBytes/],
    [{ indexIntervalBytes: {} }, TypeError, /indexIntervalBytes/],
    [{ codec: {} }, TypeError, /codec/],
    [{ codec: null }, TypeError, /codec/],
    [{ codec: 'json' }, TypeError, /codec/],
    [{ codec: { encode: () => new Uint8Array(0) } }, TypeError, /codec/],
    [{ codec: { encode: 1, decode: () => 1 } }, TypeError, /codec/],
  ]
  for (const [options, instanceOf, message] of cases) {
    const err = await t.throwsAsync(() => Log.open(dir, options), { instanceOf, message }, `Log.open(dir, ${JSON.stringify(options)})`)
    t.truthy(err.code, 'has a code')
  }
  for (const options of [null, 'x', 42]) {
    await t.throwsAsync(() => Log.open(dir, options), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }, `options ${options}`)
  }
  for (const badDir of ['', 42, null, undefined, {}]) {
    await t.throwsAsync(() => Log.open(badDir), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }, `dir ${describe(badDir)}`)
  }
  // Rejected options create nothing.
  const fresh = path.join(dir, 'never-created')
  await t.throwsAsync(() => Log.open(fresh, { segmentBytes: 10 }), { instanceOf: RangeError })
  t.false(fs.existsSync(fresh), 'a rejected open does not create the directory')

  const log = await openLog(t, dir, { segmentBytes: SEGMENT_BYTES, codec: codecs.utf8 })
  t.deepEqual([...log.records()].map((r) => r.value), ['survives'])
  t.true((await log.verify()).ok)
})

test('a directory path that is a regular file: ERR_SEGLOG_IO naming the path', async (t) => {
  const dir = tempDir(t)
  const file = path.join(dir, 'not-a-dir')
  fs.writeFileSync(file, 'x')
  const err = await t.throwsAsync(() => Log.open(file))
  t.is(err.code, 'ERR_SEGLOG_IO')
  t.true(err.message.includes(file), err.message)
  t.is(fs.readFileSync(file, 'utf8'), 'x')
})

test('every call after close fails with ERR_SEGLOG_CLOSED (async ones reject); close twice is fine', async (t) => {
  const dir = tempDir(t)
  const log = await Log.open(dir, { segmentBytes: SEGMENT_BYTES })
  log.append(Buffer.from('a'))
  const iterator = log.records()
  await log.close()
  t.true(log.closed)
  const closed = { code: 'ERR_SEGLOG_CLOSED', instanceOf: Error }
  t.throws(() => log.append(Buffer.from('b')), closed, 'append')
  t.throws(() => log.appendBatch([Buffer.from('b')]), closed, 'appendBatch')
  t.throws(() => log.appendBatch([]), closed, 'appendBatch([])')
  t.throws(() => log.get(0), closed, 'get')
  t.throws(() => log.readBatch(0), closed, 'readBatch')
  t.throws(() => log.records().next(), closed, 'records')
  t.throws(() => [...log.records({ from: 0, to: 1 })], closed, 'records with a range')
  t.throws(() => iterator.next(), closed, 'an iterator created before close')
  await t.throwsAsync(() => log.read().next(), closed, 'read')
  await t.throwsAsync(async () => {
    for await (const r of log.read()) t.fail(`read yielded ${r.offset}`)
  }, closed, 'for await read')
  await t.throwsAsync(() => log.verify(), closed, 'verify')
  t.throws(() => log.segments(), closed, 'segments')
  t.throws(() => log.nextOffset, closed, 'nextOffset')
  t.throws(() => log.firstOffset, closed, 'firstOffset')
  t.is(t.throws(() => log.get(0)).message.includes('closed'), true)
  // Still available: what does not need the files.
  t.is(typeof log.maxRecordBytes, 'number')
  t.is(log.recovery.truncation, undefined)
  await t.notThrowsAsync(() => log.close(), 'close twice')
  await t.notThrowsAsync(() => log[Symbol.asyncDispose](), 'dispose after close')

  const reopened = await openLog(t, dir)
  t.is(reopened.nextOffset, 1, 'the record appended before close is there')
})

test('an iterator interrupted by close fails with ERR_SEGLOG_CLOSED; records it already yielded stay readable', async (t) => {
  const log = await Log.open(tempDir(t), { segmentBytes: SEGMENT_BYTES })
  for (let i = 0; i < 2000; i++) log.append(Buffer.alloc(1000, i & 0xff))
  const it = log.records()
  const first = it.next().value
  await log.close()
  const seen = [first]
  const err = t.throws(() => {
    for (let r = it.next(); !r.done; r = it.next()) seen.push(r.value)
  })
  t.is(err.code, 'ERR_SEGLOG_CLOSED')
  t.true(seen.length < 2000, 'iteration stopped at the close')
  for (const r of seen) t.true(r.value.every((b) => b === (r.offset & 0xff)), `record ${r.offset} still reads right after close`)
})

test('Symbol.asyncDispose closes the log and releases the lock', async (t) => {
  const dir = tempDir(t)
  const log = await Log.open(dir, { segmentBytes: SEGMENT_BYTES })
  log.append(Buffer.from('disposed'))
  t.is(typeof log[Symbol.asyncDispose], 'function')
  await log[Symbol.asyncDispose]()
  t.true(log.closed)
  t.throws(() => log.append(Buffer.from('x')), { code: 'ERR_SEGLOG_CLOSED' })
  const again = await openLog(t, dir)
  t.is(Buffer.from(again.get(0).value).toString(), 'disposed')
})

test('a closed Log never reaches a log opened later (handles are not reused)', async (t) => {
  const a = await Log.open(tempDir(t), { segmentBytes: SEGMENT_BYTES })
  a.append(Buffer.from('a'))
  await a.close()
  const b = await openLog(t, tempDir(t), { segmentBytes: SEGMENT_BYTES })
  b.append(Buffer.from('b'))
  t.throws(() => a.append(Buffer.from('stray')), { code: 'ERR_SEGLOG_CLOSED' })
  t.throws(() => a.get(0), { code: 'ERR_SEGLOG_CLOSED' })
  t.is(b.nextOffset, 1)
  t.is(Buffer.from(b.get(0).value).toString(), 'b')
})

test('mutating returned values or the appended input does not change the log', async (t) => {
  const log = await openLog(t, tempDir(t), { segmentBytes: SEGMENT_BYTES })
  const input = Buffer.from('original value')
  log.append(input)
  input.fill(0x21)
  t.is(Buffer.from(log.get(0).value).toString(), 'original value', 'input mutated after append')
  log.appendBatch([Buffer.from('second'), Buffer.from('third')])

  const fromGet = log.get(0).value
  fromGet.fill(0)
  t.is(Buffer.from(log.get(0).value).toString(), 'original value', 'value from get mutated')

  for (const r of log.records()) r.value.fill(0x58)
  for (const r of log.readBatch(0)) r.value.fill(0x59)
  for await (const r of log.read()) r.value.fill(0x5a)
  t.deepEqual(
    [0, 1, 2].map((o) => Buffer.from(log.get(o).value).toString()),
    ['original value', 'second', 'third'],
    'values from records/readBatch/read mutated',
  )
  t.deepEqual(
    [...log.records()].map((r) => Buffer.from(r.value).toString()),
    ['original value', 'second', 'third'],
  )
  t.true((await log.verify()).ok)
})
