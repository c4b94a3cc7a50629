// seglog demo: write 1,000,000 checkable records, close, reopen, read them all back,
// verify, and report what happened and how fast. Exits non-zero if any check fails.
//
//   npm run demo            (builds first)
//   node benchmark/demo.mjs [--records N] [--dir PARENT]

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Log } from '../dist/index.mjs'
import { PAYLOAD_BYTES, fillPayload, checkPayload } from './payload.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const version = JSON.parse(fs.readFileSync(path.join(here, '..', 'package.json'), 'utf8')).version

const args = process.argv.slice(2)
const argValue = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt
}
const RECORDS = Number(argValue('--records', 1_000_000))
const BATCH = 1000
const parent = argValue('--dir', os.tmpdir())
if (!Number.isSafeInteger(RECORDS) || RECORDS <= 0 || RECORDS % BATCH !== 0) {
  console.error(`--records must be a positive multiple of ${BATCH}`)
  process.exit(2)
}

const failures = []
const check = (ok, what) => {
  if (!ok) failures.push(what)
  return ok
}

const now = () => process.hrtime.bigint()
const ms = (t0, t1 = now()) => Number(t1 - t0) / 1e6
const fmtInt = (n) => n.toLocaleString('en-US')
const fmtDur = (m) => (m >= 1000 ? `${(m / 1000).toFixed(2)} s` : `${m.toFixed(1)} ms`)
const rate = (n, m) => `${(n / m / 1000).toFixed(2)} M rec/s`
const mbps = (bytes, m) => `${(bytes / m / 1000).toFixed(0)} MB/s`
const mb = (b) => `${(b / 1e6).toFixed(1)} MB`
const line = (label, dur, ...rest) => console.log(`${label.padEnd(8)}${dur.padStart(10)}   ${rest.join('   ')}`)

const dir = fs.mkdtempSync(path.join(parent, 'seglog-demo-'))
const payloadBytes = RECORDS * PAYLOAD_BYTES
console.log(`seglog ${version} demo: ${fmtInt(RECORDS)} records of ${PAYLOAD_BYTES} B (${mb(payloadBytes)} of payload), Node ${process.version}`)
console.log(`dir      ${dir}`)

let log
try {
  // 1. Write with appendBatch, 1000 per batch. Payload generation is timed apart.
  log = await Log.open(dir)
  check(log.nextOffset === 0, 'a fresh log starts at offset 0')
  const staging = Buffer.allocUnsafeSlow(BATCH * PAYLOAD_BYTES)
  const values = Array.from({ length: BATCH }, (_, i) => staging.subarray(i * PAYLOAD_BYTES, (i + 1) * PAYLOAD_BYTES))
  let appendNs = 0n
  let genNs = 0n
  let badFirst = 0
  const w0 = now()
  for (let base = 0; base < RECORDS; base += BATCH) {
    const g0 = now()
    for (let i = 0; i < BATCH; i++) fillPayload(staging, i * PAYLOAD_BYTES, base + i)
    const a0 = now()
    const first = log.appendBatch(values)
    appendNs += now() - a0
    genNs += a0 - g0
    if (first !== base) badFirst++
  }
  const writeWall = ms(w0)
  const appendMs = Number(appendNs) / 1e6
  check(badFirst === 0, `appendBatch returned an unexpected first offset ${badFirst} times`)
  check(log.nextOffset === RECORDS, `nextOffset after writing is ${log.nextOffset}, expected ${RECORDS}`)
  line('write', fmtDur(appendMs), rate(RECORDS, appendMs), mbps(payloadBytes, appendMs),
    `appendBatch x${BATCH}; payload generation ${fmtDur(Number(genNs) / 1e6)} more, wall ${fmtDur(writeWall)}`)

  const c0 = now()
  await log.close()
  line('close', fmtDur(ms(c0)))

  // 2. Reopen: a clean close leaves nothing to recover.
  const o0 = now()
  log = await Log.open(dir)
  const openMs = ms(o0)
  const rec = log.recovery
  const clean = !rec.truncation && rec.indexesRebuilt.length === 0 && rec.tempFilesRemoved.length === 0
  check(clean, `recovery after a clean close did something: ${JSON.stringify(rec)}`)
  check(log.firstOffset === 0 && log.nextOffset === RECORDS,
    `reopened log spans ${log.firstOffset}..${log.nextOffset}, expected 0..${RECORDS}`)
  line('reopen', fmtDur(openMs), `recovery: ${clean ? 'clean' : 'NOT CLEAN'} ${JSON.stringify(rec)}`)

  // 3. Read everything back with the sync iterator, checking each payload and offset.
  let expected = 0
  let badOffsets = 0
  let badPayloads = 0
  let badTimestamps = 0
  const r0 = now()
  for (const r of log.records()) {
    if (r.offset !== expected) badOffsets++
    if (!checkPayload(r.value, expected)) badPayloads++
    if (!(r.timestamp > 0)) badTimestamps++
    expected++
  }
  const readMs = ms(r0)
  check(expected === RECORDS, `records() yielded ${expected} records, expected ${RECORDS}`)
  check(badOffsets === 0, `${badOffsets} records had an out-of-order offset`)
  check(badPayloads === 0, `${badPayloads} payloads differ from the expected bytes`)
  check(badTimestamps === 0, `${badTimestamps} records had no timestamp`)
  line('read', fmtDur(readMs), rate(expected, readMs), mbps(expected * PAYLOAD_BYTES, readMs),
    `records(), every payload checked byte for byte, offsets 0..${fmtInt(RECORDS - 1)} in order: ` +
      (badOffsets + badPayloads === 0 && expected === RECORDS ? 'ok' : 'FAILED'))

  // 4. Verify every segment, record CRC and index entry.
  const v0 = now()
  const report = await log.verify()
  const verifyMs = ms(v0)
  check(report.ok, `verify() found a problem: ${JSON.stringify(report.problem)}`)
  check(report.records === RECORDS, `verify() counted ${report.records} records, expected ${RECORDS}`)
  line('verify', fmtDur(verifyMs), rate(report.records, verifyMs), mbps(report.bytes, verifyMs),
    `ok=${report.ok}, ${fmtInt(report.records)} records, ${report.segments} segments, ${fmtInt(report.indexEntries)} index entries`)

  // 5. What is on disk.
  const segs = log.segments()
  const dataBytes = segs.reduce((s, x) => s + x.dataBytes, 0)
  let fileBytes = 0
  let allocBytes = 0
  const files = fs.readdirSync(dir)
  for (const f of files) {
    const st = fs.statSync(path.join(dir, f))
    fileBytes += st.size
    allocBytes += st.blocks * 512
  }
  check(segs.length === report.segments, `segments() lists ${segs.length}, verify() saw ${report.segments}`)
  check(segs.reduce((s, x) => s + x.records, 0) === RECORDS, 'segment record counts do not add up')
  line('disk', '', `${segs.length} segments, ${mb(dataBytes)} written (${(dataBytes / RECORDS).toFixed(0)} B/record); ` +
    `${files.length} files, ${mb(fileBytes)} apparent, ${mb(allocBytes)} allocated`)
  await log.close()
} catch (err) {
  failures.push(`threw: ${err && err.stack ? err.stack : err}`)
  if (log) await log.close().catch(() => {})
} finally {
  fs.rmSync(dir, { recursive: true, force: true })
}

check(!fs.existsSync(dir), `could not remove ${dir}`)
if (failures.length === 0) {
  console.log(`PASS     all checks passed; removed ${dir}`)
} else {
  for (const f of failures) console.error(`FAIL     ${f}`)
  process.exit(1)
}
