// One adapter per library, each configured to the guarantee the workload asks for:
// volatile (nothing is synced; a process crash keeps what was written, a machine crash
// may not) or durable (an append resolves once it is on stable storage).
//
// A log adapter (`openLog`) appends 100 B to 64 KiB values at dense offsets from 0 and
// reads them back by offset or in order; a key-value adapter (`openKv`) puts and gets
// 16-byte string keys. Calls that return a Promise are driven with many in flight
// (see workloads.mjs). `notFor(workload)` names why a library has no such case.
//
//   seglog          the native Log (and its Store for key-value)
//   seglog-js       the same API on the pure-JS engine: Log.open(dir, { engine: 'js' })
//   hand-rolled     frame-file.mjs: header + CRC + buffered fs.writeSync, group-commit fdatasync
//   lmdb            offsets as uint32 keys; volatile = noSync; durable = default (overlapping sync),
//                   an append resolves once `db.flushed` does
//   better-sqlite3  WAL; volatile = synchronous=OFF; durable = synchronous=FULL (one commit per append)
//   classic-level   LevelDB; volatile = default; durable = put(..., { sync: true })
//   hypercore       volatile only (no per-append durability option)
//   memcpy          reference: Buffer.copy into a prefaulted buffer (append workloads only)

import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { FrameFile } from './frame-file.mjs'

const require = createRequire(import.meta.url)

/** The seglog build the parent snapshotted (dist/ + native/). */
function loadSeglog(lib) {
  return import(pathToFileURL(path.join(lib, 'dist', 'index.mjs')).href)
}

const TWO_32 = 4294967296

// ---------------------------------------------------------------------------
// seglog, native and pure-JS engines

function seglogAdapter(engine) {
  return {
    async open(ctx) {
      const mod = await loadSeglog(ctx.lib)
      return {
        async openLog(dir, { durable }) {
          const options = { durability: durable ? 'sync' : 'none' }
          if (engine === 'js') options.engine = 'js'
          const log = await mod.Log.open(dir, options)
          if (engine === 'js') assertJsEngine(log, ctx.lib)
          return {
            append: (v) => log.append(v),
            appendBatch: (vs) => log.appendBatch(vs),
            appendDurable: (v) => log.appendDurable(v),
            get: (o) => log.get(o)?.value,
            scan(from, to, visit) {
              let n = 0
              for (const r of log.records({ from, to })) {
                visit(r.value, r.offset)
                n++
              }
              return n
            },
            nextOffset: () => log.nextOffset,
            details: () => ({ segments: log.segments().length, recovery: summarizeRecovery(log.recovery) }),
            close: () => log.close(),
          }
        },
        async openKv(dir) {
          if (typeof mod.Store !== 'function') throw new Error("seglog exports no Store (require('seglog').Store is undefined)")
          const store = await mod.Store.open(dir, { durability: 'none' })
          return {
            async putMany(keys, values, from, n) {
              let pending = null
              for (let i = from; i < from + n; i++) {
                const r = store.put(keys[i], values[i])
                if (r && typeof r.then === 'function') (pending ??= []).push(r)
              }
              if (pending) await Promise.all(pending)
            },
            get: (k) => store.get(k),
            close: () => store.close(),
          }
        },
      }
    },
  }
}

/** Refuses to time the native engine under the pure-JS engine's name. */
function assertJsEngine(log, lib) {
  if (typeof log.engine === 'string') {
    if (log.engine !== 'js') throw new Error(`Log.open(dir, { engine: 'js' }) opened the '${log.engine}' engine`)
    return
  }
  if (!fs.existsSync(path.join(lib, 'dist', 'js'))) {
    throw new Error("Log.open(dir, { engine: 'js' }) did not select a pure-JS engine (no dist/js/ in this build, no log.engine)")
  }
}

function summarizeRecovery(r) {
  if (!r) return undefined
  return {
    truncatedBytes: r.truncation ? r.truncation.bytesRemoved ?? r.truncation.bytes ?? null : 0,
    indexesRebuilt: r.indexesRebuilt?.length ?? 0,
  }
}

// ---------------------------------------------------------------------------
// hand-rolled append file

const handRolled = {
  async open() {
    return {
      async openLog(dir, { durable }) {
        fs.mkdirSync(dir, { recursive: true })
        const f = new FrameFile(path.join(dir, 'records.log'))
        return {
          append: (v) => f.append(v),
          appendBatch: (vs) => f.appendBatch(vs),
          appendDurable: durable ? (v) => f.appendDurable(v) : undefined,
          get: (o) => f.get(o),
          scan: (from, to, visit) => f.scan(from, to, visit),
          nextOffset: () => f.nextOffset,
          close: () => f.close(),
        }
      },
    }
  },
}

// ---------------------------------------------------------------------------
// lmdb

const lmdbAdapter = {
  async open() {
    const { open } = require('lmdb')
    return {
      async openLog(dir, { durable }) {
        const db = open({ path: dir, keyEncoding: 'uint32', encoding: 'binary', compression: false, noSync: !durable })
        let next = lastKey(db) + 1
        return {
          apiNotes: { append: 'put (async, one transaction per event-loop turn)', appendBatch: 'transactionSync of puts', get: 'getBinaryFast', scan: 'getRange' },
          append: (v) => db.put(next++, v),
          appendBatch(vs) {
            const first = next
            db.transactionSync(() => {
              for (let i = 0; i < vs.length; i++) db.put(next++, vs[i])
            })
            return first
          },
          async appendDurable(v) {
            const o = next++
            await db.put(o, v)
            await db.flushed
            return o
          },
          get: (o) => db.getBinaryFast(o),
          scan(from, to, visit) {
            let n = 0
            for (const { key, value } of db.getRange({ start: from, end: to })) {
              visit(value, key)
              n++
            }
            return n
          },
          nextOffset: () => next,
          close: () => db.close(),
        }
      },
      async openKv(dir) {
        const db = open({ path: dir, encoding: 'binary', compression: false, noSync: true })
        return {
          apiNotes: { put: 'transactionSync of 1000 puts', get: 'getBinaryFast' },
          putMany(keys, values, from, n) {
            db.transactionSync(() => {
              for (let i = from; i < from + n; i++) db.put(keys[i], values[i])
            })
          },
          get: (k) => db.getBinaryFast(k),
          close: () => db.close(),
        }
      },
    }
  },
}

function lastKey(db) {
  for (const k of db.getKeys({ reverse: true, limit: 1 })) return k
  return -1
}

// ---------------------------------------------------------------------------
// better-sqlite3

const sqliteAdapter = {
  async open() {
    const Database = require('better-sqlite3')
    const openDb = (file, durable) => {
      const db = new Database(file)
      db.pragma('journal_mode = WAL')
      db.pragma(`synchronous = ${durable ? 'FULL' : 'OFF'}`)
      return db
    }
    return {
      async openLog(dir, { durable }) {
        fs.mkdirSync(dir, { recursive: true })
        const db = openDb(path.join(dir, 'log.sqlite'), durable)
        db.exec('CREATE TABLE IF NOT EXISTS log (off INTEGER PRIMARY KEY, v BLOB NOT NULL)')
        const insert = db.prepare('INSERT INTO log (off, v) VALUES (?, ?)')
        const select = db.prepare('SELECT v FROM log WHERE off = ?').pluck()
        const range = db.prepare('SELECT off, v FROM log WHERE off >= ? AND off < ? ORDER BY off').raw()
        let next = (db.prepare('SELECT max(off) FROM log').pluck().get() ?? -1) + 1
        const insertMany = db.transaction((vs) => {
          for (let i = 0; i < vs.length; i++) insert.run(next++, vs[i])
        })
        const append = (v) => {
          insert.run(next, v)
          return next++
        }
        return {
          apiNotes: { append: 'INSERT, autocommit', appendBatch: 'one transaction per batch', get: 'prepared point SELECT', scan: 'iterate() over a range SELECT' },
          append,
          appendBatch(vs) {
            const first = next
            insertMany(vs)
            return first
          },
          appendDurable: durable ? append : undefined,
          get: (o) => select.get(o),
          scan(from, to, visit) {
            let n = 0
            for (const row of range.iterate(from, to)) {
              visit(row[1], row[0])
              n++
            }
            return n
          },
          nextOffset: () => next,
          close: () => db.close(),
        }
      },
      async openKv(dir) {
        fs.mkdirSync(dir, { recursive: true })
        const db = openDb(path.join(dir, 'kv.sqlite'), false)
        db.exec('CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID')
        const upsert = db.prepare('INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)')
        const select = db.prepare('SELECT v FROM kv WHERE k = ?').pluck()
        const putMany = db.transaction((keys, values, from, n) => {
          for (let i = from; i < from + n; i++) upsert.run(keys[i], values[i])
        })
        return {
          apiNotes: { put: '1000 rows per transaction', get: 'prepared point SELECT' },
          putMany,
          get: (k) => select.get(k),
          close: () => db.close(),
        }
      },
    }
  },
}

// ---------------------------------------------------------------------------
// classic-level

const levelAdapter = {
  async open() {
    const { ClassicLevel } = require('classic-level')
    const keyOf = (o) => {
      const k = Buffer.allocUnsafe(8)
      k.writeUInt32BE(Math.floor(o / TWO_32), 0)
      k.writeUInt32BE(o >>> 0, 4)
      return k
    }
    const offsetOf = (k) => k.readUInt32BE(0) * TWO_32 + k.readUInt32BE(4)
    return {
      async openLog(dir, { durable }) {
        const db = new ClassicLevel(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
        await db.open()
        let next = 0
        for await (const k of db.keys({ reverse: true, limit: 1 })) next = offsetOf(k) + 1
        const syncOpt = { sync: true }
        return {
          apiNotes: { append: 'put', appendBatch: 'batch of 1000 puts', get: 'get', scan: 'iterator nextv(1000)' },
          append: (v) => db.put(keyOf(next++), v),
          async appendBatch(vs) {
            const first = next
            const ops = new Array(vs.length)
            for (let i = 0; i < vs.length; i++) ops[i] = { type: 'put', key: keyOf(next++), value: vs[i] }
            await db.batch(ops)
            return first
          },
          async appendDurable(v) {
            const o = next++
            await db.put(keyOf(o), v, syncOpt)
            return o
          },
          get: (o) => db.get(keyOf(o)),
          async scan(from, to, visit) {
            const it = db.iterator({ gte: keyOf(from), lt: keyOf(to) })
            let n = 0
            try {
              for (;;) {
                const entries = await it.nextv(1000)
                if (entries.length === 0) break
                for (let i = 0; i < entries.length; i++) visit(entries[i][1], from + n++)
              }
            } finally {
              await it.close()
            }
            return n
          },
          nextOffset: () => next,
          close: () => db.close(),
        }
      },
      async openKv(dir) {
        const db = new ClassicLevel(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' })
        await db.open()
        return {
          apiNotes: { put: 'batch of 1000 puts', get: 'get' },
          putMany(keys, values, from, n) {
            const ops = new Array(n)
            for (let i = 0; i < n; i++) ops[i] = { type: 'put', key: keys[from + i], value: values[from + i] }
            return db.batch(ops)
          },
          get: (k) => db.get(k),
          close: () => db.close(),
        }
      },
    }
  },
}

// ---------------------------------------------------------------------------
// hypercore

const hypercoreAdapter = {
  async open() {
    const Hypercore = (await import('hypercore')).default
    return {
      async openLog(dir) {
        const core = new Hypercore(dir)
        await core.ready()
        return {
          apiNotes: { append: 'append(block)', appendBatch: 'append(array of 1000)', get: 'get', scan: 'createReadStream' },
          append: (v) => core.append(v),
          async appendBatch(vs) {
            const { length } = await core.append(vs)
            return length - vs.length
          },
          get: (o) => core.get(o, { wait: false }),
          async scan(from, to, visit) {
            let n = 0
            for await (const block of core.createReadStream({ start: from, end: to })) visit(block, from + n++)
            return n
          },
          nextOffset: () => core.length,
          close: () => core.close(),
        }
      },
    }
  },
}

// ---------------------------------------------------------------------------
// memcpy reference

const memcpyAdapter = {
  async open() {
    return {}
  },
}

const notKv = (w) => (w.kind === 'kv' ? 'not a key-value store' : null)

// notFor(workload): why the library has no such case (null when it has one).
export const LIBRARIES = [
  { id: 'seglog', label: 'seglog', packages: [], adapter: seglogAdapter('native'), notFor: () => null },
  {
    id: 'seglog-js', label: 'seglog pure-JS engine', packages: [], adapter: seglogAdapter('js'),
    notFor: (w) => (w.kind === 'kv' ? 'the key-value Store is measured on the native engine' : null),
  },
  { id: 'hand-rolled', label: 'hand-rolled file', packages: ['crc-32'], adapter: handRolled, notFor: notKv },
  { id: 'lmdb', label: 'lmdb', packages: ['lmdb'], adapter: lmdbAdapter, notFor: () => null },
  { id: 'better-sqlite3', label: 'better-sqlite3', packages: ['better-sqlite3'], adapter: sqliteAdapter, notFor: () => null },
  { id: 'classic-level', label: 'classic-level', packages: ['classic-level'], adapter: levelAdapter, notFor: () => null },
  {
    id: 'hypercore', label: 'hypercore', packages: ['hypercore'], adapter: hypercoreAdapter,
    notFor: (w) =>
      notKv(w) ??
      (w.durable ? 'no per-append durability option' : null) ??
      (w.kind === 'open' ? "refuses to open a copy of its directory ('Invalid device file, was moved unsafely'), and every trial needs a fresh copy of the crashed log" : null),
  },
  {
    id: 'memcpy', label: 'memcpy (Buffer.copy)', packages: ['mitata'], adapter: memcpyAdapter,
    notFor: (w) => (w.kind === 'append' && !w.batch ? null : 'a reference for single appends only'),
  },
]

export const libraryById = (id) => LIBRARIES.find((l) => l.id === id)
