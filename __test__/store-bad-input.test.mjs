// Guards the Store against bad input that writes something, crashes the process or fails
// with an unclear error: keys of the wrong type or out of range, empty and oversized
// keys, values the codec cannot encode, values too large for maxRecordBytes, a putBatch
// with one bad entry among good ones, bad options, and every call after close(). Each
// must fail with a TypeError (code ERR_INVALID_ARG_TYPE), a RangeError (a stable code) or
// an Error with code ERR_SEGLOG_CLOSED, and leave the store exactly as it was:
// stats().nextOffset unchanged (nothing appended to the log) and the same contents, also
// after a reopen. The durable variants reject rather than throw.
import fs from 'node:fs'

import test from 'ava'

import { Store, codecs } from '../dist/index.mjs'
import { tempDir } from './helpers/temp.mjs'
import { contents, modelContents, openStore, showKey } from './fixtures/store-helpers.mjs'

const SEGMENT_BYTES = 64 << 10
const TYPE = { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }
const RANGE = { instanceOf: RangeError, code: 'ERR_SEGLOG_INVALID_ARGUMENT' }
const TOO_LARGE = { instanceOf: RangeError, code: 'ERR_SEGLOG_RECORD_TOO_LARGE' }
const CLOSED = { code: 'ERR_SEGLOG_CLOSED' }

/** A string with lone surrogates shown as escapes. */
const esc = (s) => JSON.stringify(s)

const cycle = {}
cycle.self = cycle

/** Keys that are not a string or a number: TypeError. */
const WRONG_TYPE_KEYS = [{}, [], [1], null, undefined, true, false, 1n, Symbol('k'), () => 1, new String('s'), new Number(1), Buffer.from('k')]
/** Numbers that are not safe non-negative integers, and bad strings: RangeError. */
const OUT_OF_RANGE_KEYS = [NaN, -1, 1.5, 2 ** 53, 2 ** 53 + 2, -0.5, Infinity, -Infinity, Number.MAX_VALUE, '', 'a'.repeat(1025), 'é'.repeat(513), '日'.repeat(400), '🔑'.repeat(257), '日'.repeat(341) + 'ab']

const describe = (v) => {
  if (typeof v === 'bigint') return `${v}n`
  if (typeof v === 'symbol') return 'Symbol'
  if (typeof v === 'function') return 'function'
  if (typeof v === 'string') return v.length > 20 ? `string of ${v.length} chars (${Buffer.byteLength(v)} bytes)` : JSON.stringify(v)
  if (Array.isArray(v)) return `[${v.length}]`
  if (v instanceof Uint8Array) return 'Buffer'
  if (typeof v === 'object' && v !== null) return v.constructor?.name ?? 'object'
  return String(v)
}

/**
 * A store with known contents (json codec unless `options` says otherwise), and checks that
 * a bad call fails as expected and changes nothing.
 */
async function storeWithContents(t, options = {}) {
  const dir = tempDir(t)
  const store = await openStore(t, dir, { codec: codecs.json, segmentBytes: SEGMENT_BYTES, ...options })
  const model = new Map()
  // `{ codec: undefined }` means the default, raw codec.
  const raw = 'codec' in options && options.codec === undefined
  const good = raw ? (i) => Buffer.from(`v${i}`) : options.codec === codecs.utf8 ? (i) => `v${i}` : (i) => ({ i })
  for (const key of [1, '1', 0, 'k', 'ключ']) {
    store.put(key, good(String(key).length))
    model.set(key, good(String(key).length))
  }
  store.putBatch([
    [2, good(2)],
    ['b', good(3)],
  ])
  model.set(2, good(2)).set('b', good(3))
  const expected = modelContents(model)
  const nextOffset = store.stats().nextOffset
  const intact = async (what) => {
    t.is(store.stats().nextOffset, nextOffset, `${what}: nothing written (nextOffset unchanged)`)
    t.deepEqual(await contents(t, store), expected, `${what}: contents unchanged`)
  }
  return {
    dir,
    store,
    model,
    good,
    intact,
    /** `fn` throws an error matching `expectation`, and nothing changed. */
    async rejects(fn, expectation, what) {
      const err = t.throws(fn, expectation, what)
      t.true(typeof err?.message === 'string' && err.message.length > 0, `${what}: the error has a message`)
      await intact(what)
      return err
    },
    /** `fn` returns a promise (does not throw) that rejects as expected, and nothing changed. */
    async rejectsAsync(fn, expectation, what) {
      let p
      t.notThrows(() => {
        p = fn()
      }, `${what}: returns a promise rather than throwing`)
      const err = await t.throwsAsync(p, expectation, what)
      await intact(what)
      return err
    },
    /** Reopens the store and checks the contents survived. */
    async reopened(opts = {}) {
      await store.close()
      const again = await openStore(t, dir, { codec: codecs.json, segmentBytes: SEGMENT_BYTES, ...options, ...opts })
      t.deepEqual(await contents(t, again), expected, 'contents after reopen')
      t.deepEqual(again.stats().warnings, [])
      return again
    },
  }
}

test('keys of the wrong type: TypeError ERR_INVALID_ARG_TYPE from every method that takes a key; nothing written', async (t) => {
  const { store, rejects, rejectsAsync, reopened } = await storeWithContents(t)
  for (const key of WRONG_TYPE_KEYS) {
    const d = describe(key)
    await rejects(() => store.put(key, { v: 1 }), TYPE, `put(${d})`)
    await rejects(() => store.get(key), TYPE, `get(${d})`)
    await rejects(() => store.has(key), TYPE, `has(${d})`)
    await rejects(() => store.delete(key), TYPE, `delete(${d})`)
    await rejects(() => store.putBatch([[key, { v: 1 }]]), TYPE, `putBatch([[${d}, ...]])`)
    await rejectsAsync(() => store.putDurable(key, { v: 1 }), TYPE, `putDurable(${d})`)
    await rejectsAsync(() => store.deleteDurable(key), TYPE, `deleteDurable(${d})`)
    await rejectsAsync(() => store.putBatchDurable([[key, { v: 1 }]]), TYPE, `putBatchDurable([[${d}, ...]])`)
  }
  await reopened()
})

test('keys out of range (NaN, -1, 1.5, 2**53, Infinity, empty string, over 1024 bytes of UTF-8 incl. multibyte): RangeError ERR_SEGLOG_INVALID_ARGUMENT; nothing written', async (t) => {
  const { store, rejects, rejectsAsync, reopened } = await storeWithContents(t)
  for (const key of OUT_OF_RANGE_KEYS) {
    const d = describe(key)
    if (typeof key === 'string' && key.length > 0) t.true(Buffer.byteLength(key) > 1024, `${d} is over 1024 bytes`)
    const err = await rejects(() => store.put(key, { v: 1 }), RANGE, `put(${d})`)
    if (typeof key === 'string' && key.length > 0) t.regex(err.message, /1024/, `put(${d}): the message says the limit`)
    await rejects(() => store.get(key), RANGE, `get(${d})`)
    await rejects(() => store.has(key), RANGE, `has(${d})`)
    await rejects(() => store.delete(key), RANGE, `delete(${d})`)
    await rejects(() => store.putBatch([[key, { v: 1 }]]), RANGE, `putBatch([[${d}, ...]])`)
    await rejectsAsync(() => store.putDurable(key, { v: 1 }), RANGE, `putDurable(${d})`)
    await rejectsAsync(() => store.deleteDurable(key), RANGE, `deleteDurable(${d})`)
    await rejectsAsync(() => store.putBatchDurable([[key, { v: 1 }]]), RANGE, `putBatchDurable([[${d}, ...]])`)
  }
  const again = await reopened()
  // The limits themselves are fine: 0, 2**53-1, 1024 bytes (ASCII and multibyte), one character.
  for (const key of [0, Number.MAX_SAFE_INTEGER, 'a'.repeat(1024), '日'.repeat(341) + 'a', '🔑'.repeat(256), 'x']) {
    t.notThrows(() => again.put(key, { ok: true }), `put(${describe(key)})`)
    t.deepEqual(again.get(key), { ok: true })
  }
})

test('keys that are not well-formed UTF-16 (lone surrogates) are refused, or kept apart exactly as given: never silently merged with another key', async (t) => {
  const { store, model } = await storeWithContents(t)
  const lone = ['\ud800', '\udfff', 'a\ud800b', 'a\udc00b', '\ufffd']
  const accepted = []
  for (const key of lone) {
    let err
    try {
      store.put(key, { key: esc(key) })
    } catch (e) {
      err = e
    }
    if (err === undefined) {
      accepted.push(key)
      model.set(key, { key: esc(key) })
    } else {
      t.true(err instanceof RangeError || err instanceof TypeError, `put(${esc(key)}) threw ${err}`)
      t.truthy(err.code, `put(${esc(key)}): the error has a code`)
    }
  }
  // Every accepted key holds its own value and keys() yields it exactly as given.
  const keys = [...store.keys()]
  for (const key of accepted) {
    t.deepEqual(store.get(key), { key: esc(key) }, `get(${esc(key)}) returns the value put under that key, not another key's`)
    t.true(keys.includes(key), `keys() yields ${esc(key)} as given (it yields ${JSON.stringify(keys.filter((k) => typeof k === 'string' && !model.has(k)).map(esc))})`)
  }
  t.is(store.size, model.size, `size: ${accepted.length} distinct keys accepted, so ${model.size} keys`)
})

test('values the codec cannot encode: TypeError ERR_INVALID_ARG_TYPE; nothing written', async (t) => {
  // raw codec: only Uint8Array.
  {
    const { store, rejects, rejectsAsync } = await storeWithContents(t, { codec: undefined })
    for (const value of ['a string', '', 42, null, undefined, {}, [1, 2], new ArrayBuffer(4), new DataView(new ArrayBuffer(4)), 1n, Symbol('v')]) {
      const d = describe(value)
      const err = await rejects(() => store.put('k', value), TYPE, `raw put(${d})`)
      t.regex(err.message, /Uint8Array/)
      await rejects(() => store.putBatch([['k', value]]), TYPE, `raw putBatch(${d})`)
      await rejectsAsync(() => store.putDurable('k', value), TYPE, `raw putDurable(${d})`)
    }
  }
  // json codec: undefined, BigInt, a cycle, a function, a symbol.
  {
    const { store, rejects, rejectsAsync } = await storeWithContents(t, { codec: codecs.json })
    for (const value of [undefined, 1n, { n: 1n }, cycle, [cycle], () => 1, Symbol('v')]) {
      const d = describe(value)
      const err = await rejects(() => store.put('k', value), TYPE, `json put(${d})`)
      t.regex(err.message, /JSON/)
      await rejects(() => store.putBatch([['k', value]]), TYPE, `json putBatch(${d})`)
      await rejectsAsync(() => store.putDurable('k', value), TYPE, `json putDurable(${d})`)
      await rejectsAsync(() => store.putBatchDurable([['k', value]]), TYPE, `json putBatchDurable(${d})`)
    }
  }
  // utf8 codec: strings only.
  {
    const { store, rejects } = await storeWithContents(t, { codec: codecs.utf8 })
    for (const value of [42, Buffer.from('x'), null, undefined, {}]) await rejects(() => store.put('k', value), TYPE, `utf8 put(${describe(value)})`)
  }
  // A custom codec that returns something else than bytes, or throws.
  {
    const dir = tempDir(t)
    let mode = 'ok'
    const codec = {
      encode(v) {
        if (mode === 'string') return 'not bytes'
        if (mode === 'throw') throw new Error('codec says no')
        return Buffer.from(JSON.stringify(v))
      },
      decode: (b) => JSON.parse(Buffer.from(b).toString()),
    }
    const store = await openStore(t, dir, { codec })
    store.put('k', 1)
    const next = store.stats().nextOffset
    mode = 'string'
    t.throws(() => store.put('k', 2), TYPE)
    t.throws(() => store.putBatch([['j', 2]]), TYPE)
    mode = 'throw'
    t.throws(() => store.put('k', 2), { message: 'codec says no' })
    await t.throwsAsync(store.putDurable('k', 2), { message: 'codec says no' })
    mode = 'ok'
    t.is(store.stats().nextOffset, next)
    t.is(store.get('k'), 1)
    t.false(store.has('j'))
  }
})

test('a value too large for maxRecordBytes: RangeError ERR_SEGLOG_RECORD_TOO_LARGE, nothing written; the exact limit fits', async (t) => {
  const MAX = 1024
  const { store, rejects, rejectsAsync } = await storeWithContents(t, { codec: undefined, maxRecordBytes: MAX })
  // A record is 4 bytes + key + value.
  for (const key of [5, 'k', 'ключ', '日'.repeat(100)]) {
    const keyBytes = typeof key === 'number' ? 8 : Buffer.byteLength(key)
    const fits = MAX - 4 - keyBytes
    const d = showKey(key)
    const err = await rejects(() => store.put(key, Buffer.alloc(fits + 1)), TOO_LARGE, `put(${d}, ${fits + 1} bytes)`)
    t.regex(err.message, /maxRecordBytes/)
    await rejects(() => store.putBatch([[key, Buffer.alloc(fits + 1)]]), TOO_LARGE, `putBatch(${d})`)
    await rejectsAsync(() => store.putDurable(key, Buffer.alloc(fits + 1)), TOO_LARGE, `putDurable(${d})`)
    await rejects(() => store.put(key, Buffer.alloc(100_000)), TOO_LARGE, `put(${d}, 100 000 bytes)`)
  }
  for (const key of [5, 'k', 'ключ', '日'.repeat(100)]) {
    const keyBytes = typeof key === 'number' ? 8 : Buffer.byteLength(key)
    const fits = MAX - 4 - keyBytes
    const d = showKey(key)
    const before = store.stats().nextOffset
    t.notThrows(() => store.put(key, Buffer.alloc(fits, 7)), `put(${d}, ${fits} bytes): exactly the limit`)
    t.is(store.stats().nextOffset, before + 1)
    t.is(store.get(key).length, fits)
    t.true(store.delete(key))
  }
})

test('putBatch with one bad entry among good ones writes nothing: nextOffset unchanged, the good keys absent', async (t) => {
  const { store, rejects, rejectsAsync, reopened } = await storeWithContents(t)
  const good = (n) => Array.from({ length: n }, (_, i) => [`good${i}`, { i }])
  const cases = [
    ['a key of the wrong type last', [...good(5), [{}, 1]], TYPE],
    ['a key of the wrong type first', [[null, 1], ...good(5)], TYPE],
    ['a negative key in the middle', [...good(3), [-1, 1], ...good(3)], RANGE],
    ['an empty string key', [...good(3), ['', 1]], RANGE],
    ['an oversized key', [...good(3), ['x'.repeat(1025), 1]], RANGE],
    ['an oversized multibyte key', [...good(3), ['日'.repeat(400), 1]], RANGE],
    ['a value JSON cannot encode', [...good(3), ['bad', 1n], ...good(2)], TYPE],
    ['a cyclic value', [...good(3), ['bad', cycle]], TYPE],
    ['an entry that is not a pair', [...good(3), ['lonely']], TYPE],
    ['an entry with three elements', [...good(3), ['a', 1, 2]], TYPE],
    ['an entry that is null', [...good(3), null], TYPE],
    ['an entry that is a string', [...good(3), 'ab'], TYPE],
    ['a batch too large for a segment', Array.from({ length: 100 }, (_, i) => [`big${i}`, 'x'.repeat(1000)]), { instanceOf: RangeError, code: 'ERR_SEGLOG_BATCH_TOO_LARGE' }],
  ]
  for (const [name, entries, expectation] of cases) {
    await rejects(() => store.putBatch(entries), expectation, `putBatch with ${name}`)
    await rejectsAsync(() => store.putBatchDurable(entries), expectation, `putBatchDurable with ${name}`)
    for (const [key] of entries.filter((e) => Array.isArray(e) && e.length === 2 && (typeof e[0] === 'string' || typeof e[0] === 'number'))) {
      if (typeof key === 'string' && (key.length === 0 || Buffer.byteLength(key) > 1024)) continue
      if (typeof key === 'number' && !(Number.isSafeInteger(key) && key >= 0)) continue
      t.false(store.has(key), `putBatch with ${name}: ${showKey(key)} absent`)
    }
  }
  // Not an iterable of pairs at all.
  for (const entries of [null, undefined, 42, {}, 'ab', { length: 1, 0: ['k', 1] }]) {
    await rejects(() => store.putBatch(entries), TYPE, `putBatch(${describe(entries)})`)
    await rejectsAsync(() => store.putBatchDurable(entries), TYPE, `putBatchDurable(${describe(entries)})`)
  }
  // An iterable that throws halfway.
  function* throwing() {
    yield ['good-a', 1]
    yield ['good-b', 2]
    throw new Error('iterator broke')
  }
  await rejects(() => store.putBatch(throwing()), { message: 'iterator broke' }, 'putBatch of an iterator that throws')
  t.false(store.has('good-a'))
  // An empty batch writes nothing and is no error.
  t.notThrows(() => store.putBatch([]))
  await t.notThrowsAsync(store.putBatchDurable([]))
  await reopened()
})

test('Store.open with bad arguments: TypeError / RangeError with a code, nothing created', async (t) => {
  const dir = tempDir(t)
  const sub = `${dir}/never`
  for (const d of [undefined, null, 42, '', {}]) await t.throwsAsync(Store.open(d), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }, `dir ${describe(d)}`)
  await t.throwsAsync(Store.open(sub, null), TYPE, 'options null')
  await t.throwsAsync(Store.open(sub, 42), TYPE, 'options 42')
  await t.throwsAsync(Store.open(sub, { codec: {} }), TYPE, 'codec {}')
  await t.throwsAsync(Store.open(sub, { codec: 'json' }), TYPE, "codec 'json'")
  await t.throwsAsync(Store.open(sub, { durability: 'always' }), RANGE, "durability 'always'")
  await t.throwsAsync(Store.open(sub, { durability: 1 }), TYPE, 'durability 1')
  for (const name of ['segmentBytes', 'maxRecordBytes', 'snapshotEveryBytes', 'compactionStepBytes', 'syncIntervalMs', 'syncIntervalBytes']) {
    for (const v of [-1, 1.5, NaN]) await t.throwsAsync(Store.open(sub, { [name]: v }), { instanceOf: RangeError }, `${name} ${v}`)
    await t.throwsAsync(Store.open(sub, { [name]: '1' }), { instanceOf: TypeError }, `${name} '1'`)
  }
  await t.throwsAsync(Store.open(sub, { compactionStepBytes: 0 }), RANGE)
  await t.throwsAsync(Store.open(sub, { syncIntervalMs: 0 }), RANGE)
  await t.throwsAsync(Store.open(sub, { segmentBytes: 100 }), { instanceOf: RangeError }, 'segmentBytes below 4 KiB')
  t.false(fs.existsSync(sub), 'nothing was created')
})

test('every call after close(): ERR_SEGLOG_CLOSED (sync methods throw, async ones reject); close twice is fine', async (t) => {
  const dir = tempDir(t)
  const store = await Store.open(dir, { codec: codecs.utf8, durability: 'sync' })
  store.put('k', 'v')
  const pending = store.putDurable('p', 'pending') // settled by close
  await store.close()
  await t.notThrowsAsync(pending, 'a putDurable pending at close() resolves')
  t.true(store.closed)
  await t.notThrowsAsync(store.close(), 'close() twice')
  await t.notThrowsAsync(store[Symbol.asyncDispose](), 'asyncDispose after close')

  const sync = {
    get: () => store.get('k'),
    has: () => store.has('k'),
    put: () => store.put('k', 'x'),
    delete: () => store.delete('k'),
    putBatch: () => store.putBatch([['k', 'x']]),
    keys: () => store.keys(),
    size: () => store.size,
    stats: () => store.stats(),
  }
  for (const [name, fn] of Object.entries(sync)) {
    const err = t.throws(fn, CLOSED, `${name} after close`)
    t.true(err instanceof Error, `${name}: an Error`)
    t.regex(err?.message ?? '', /closed/, `${name}: the message says closed`)
  }
  // Bad arguments after close: still a clear error (closed or the argument's), never a crash.
  t.throws(() => store.get({}), { instanceOf: Error })
  const async = {
    putDurable: () => store.putDurable('k', 'x'),
    deleteDurable: () => store.deleteDurable('k'),
    putBatchDurable: () => store.putBatchDurable([['k', 'x']]),
    sync: () => store.sync(),
    snapshot: () => store.snapshot(),
    compact: () => store.compact(),
    'entries().next()': () => store.entries().next(),
  }
  for (const [name, fn] of Object.entries(async)) {
    let p
    t.notThrows(() => {
      p = fn()
    }, `${name} after close returns a promise`)
    await t.throwsAsync(p, CLOSED, `${name} after close`)
  }
  t.is(store.durability, 'sync', 'durability is still readable')
  t.true(store.closed)

  // Nothing was written after close.
  const again = await openStore(t, dir, { codec: codecs.utf8 })
  t.is(again.get('k'), 'v')
  t.is(again.get('p'), 'pending')
  t.is(again.size, 2)
})

test('close() during a compaction: the compaction stops with ERR_SEGLOG_CLOSED, the store reopens with the same contents', async (t) => {
  const dir = tempDir(t)
  const options = { codec: codecs.utf8, segmentBytes: SEGMENT_BYTES, compactionStepBytes: 4096, snapshotEveryBytes: 0 }
  const store = await Store.open(dir, options)
  const model = new Map()
  for (let i = 0; i < 5000; i++) {
    store.put(i % 700, `v${i}`)
    model.set(i % 700, `v${i}`)
  }
  const compaction = store.compact()
  await new Promise((resolve) => setImmediate(resolve))
  await new Promise((resolve) => setImmediate(resolve))
  t.truthy(store.stats().compaction, 'the compaction is running')
  await store.close()
  await t.throwsAsync(compaction, CLOSED)
  const again = await openStore(t, dir, options)
  t.deepEqual(again.stats().warnings, [])
  t.deepEqual(await contents(t, again), modelContents(model))
  // The abandoned compaction's copies are harmless: a full compaction now works.
  await again.compact()
  t.deepEqual(await contents(t, again), modelContents(model))
})
