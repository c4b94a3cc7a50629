// Summaries, goals, the markdown report and the SVG charts of `npm run bench`.
// Every ratio compares medians of the same run; the goals are reported, not asserted.

import { spread } from '../harness.mjs'

export const BASELINE = 'lmdb' // the chart's "1.0x": a peer present in every workload

// Goals from issue 6: `lib` over `peer` on `workload`, at least `min`.
export const GOALS = [
  { workload: 'append-batch-100B', peer: 'seglog-js', min: 8, text: 'batched append 100 B >= 8x pure-JS engine' },
  { workload: 'append-batch-100B', peer: 'lmdb', min: 15, text: 'batched append 100 B >= 15x lmdb transactionSync' },
  { workload: 'append-100B', peer: 'seglog-js', min: 3, text: 'single append >= 3x pure-JS engine' },
  { workload: 'scan', peer: 'seglog-js', min: 3, text: 'sequential scan with CRC >= 3x pure-JS engine' },
  { workload: 'scan', peer: 'lmdb', min: 10, text: 'sequential scan with CRC >= 10x lmdb getRange' },
  { workload: 'get', peer: 'lmdb', min: 4, text: 'random read by offset >= 4x lmdb getBinaryFast' },
  { workload: 'durable-256', peer: 'lmdb', min: 1, text: 'durable appends, 256 callers >= lmdb async put (durable)' },
  { workload: 'append-64KiB', peer: 'memcpy', min: 0.4, text: '64 KiB appends >= 40% of memcpy bandwidth' },
  { workload: 'kv-put', peer: 'lmdb', min: 2, text: 'KV put >= 2x lmdb transactionSync' },
  { workload: 'kv-put', peer: 'better-sqlite3', min: 2, text: 'KV put >= 2x better-sqlite3' },
  { workload: 'kv-get', peer: 'lmdb', min: 1.5, text: 'KV get >= 1.5x lmdb getBinaryFast' },
]

/** Per workload, per library: median and min-max over trials, or why there is none. */
export function summarize(workloads, libraries, runs, absentReason) {
  const out = {}
  for (const w of workloads) {
    const byLib = {}
    for (const l of libraries) {
      const rs = runs.filter((r) => r.workload === w.id && r.library === l.id)
      if (rs.length === 0) {
        byLib[l.id] = absentReason(l, w) ?? { failed: true }
        continue
      }
      const value = spread(rs.map((r) => (w.lowerIsBetter ? r.ms : r.rate)))
      byLib[l.id] = {
        trials: rs.length,
        ...value,
        mbPerS: spread(rs.map((r) => r.mbPerS).filter((x) => x !== undefined)),
        cpuNsPerOp: spread(rs.map((r) => r.cpuNsPerOp)),
        cpuMs: spread(rs.map((r) => r.cpuMs)),
        maxRssMb: spread(rs.map((r) => r.maxRssMb)),
        ...(rs[0].ackMs ? { ackMsP50: spread(rs.map((r) => r.ackMs.p50)), ackMsP99: spread(rs.map((r) => r.ackMs.p99)) } : {}),
        ...(rs[0].diskMb !== undefined ? { diskMb: rs[0].diskMb, records: rs[0].records, recordsLost: rs[0].recordsLost } : {}),
        ...(rs[0].api ? { api: rs[0].api } : {}),
        contendedTrials: rs.filter((r) => r.cpuBusyBefore > 0.25).length,
      }
    }
    // Speed relative to the baseline (for times: baseline time / time).
    const base = byLib[BASELINE]?.median
    for (const s of Object.values(byLib)) {
      if (s.median !== undefined && base !== undefined) s.xBaseline = w.lowerIsBetter ? base / s.median : s.median / base
    }
    out[w.id] = byLib
  }
  return out
}

/** seglog's median over the peer's median (speed, so inverted for times). */
export function ratio(summary, workloadId, lib, peer, lowerIsBetter = false) {
  const a = summary[workloadId]?.[lib]?.median
  const b = summary[workloadId]?.[peer]?.median
  if (a === undefined || b === undefined) return undefined
  return lowerIsBetter ? b / a : a / b
}

export function evaluateGoals(summary) {
  return GOALS.map((g) => {
    const r = ratio(summary, g.workload, 'seglog', g.peer)
    const why = r === undefined ? absent(summary, g.workload, r === undefined && summary[g.workload]?.seglog?.median === undefined ? 'seglog' : g.peer) : undefined
    return { ...g, ratio: r, status: r === undefined ? 'not measured' : r >= g.min ? 'met' : 'missed', ...(why ? { why } : {}) }
  })
}

function absent(summary, workloadId, lib) {
  const s = summary[workloadId]?.[lib]
  if (!s) return `${workloadId} not run`
  return `${lib}: ${s.unavailable ?? s.na ?? (s.failed ? 'failed' : 'no result')}`
}

/** seglog's key-value rows are its Store. */
const labelFor = (l, w) => (l.id === 'seglog' && w.kind === 'kv' ? 'seglog Store' : l.label)

const fmtRate = (x) => (x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)} k` : x.toFixed(0))
const fmtValue = (w, x) => (w.lowerIsBetter ? `${x.toFixed(x < 10 ? 2 : 0)} ms` : `${fmtRate(x)}/s`)
const fmtX = (x) => (x === undefined ? '-' : x >= 10 ? `${x.toFixed(0)}x` : x >= 0.1 ? `${x.toFixed(1)}x` : `${x.toPrecision(2)}x`)

export function markdown(result) {
  const { env, config, summary, goals, workloads, libraries } = result
  const L = []
  L.push(`# seglog and its peers (\`npm run bench${config.quick ? ' -- --quick' : ''}\`)`)
  L.push('')
  L.push(`${result.date}, ${config.trials} trial(s) per library x workload, one child process each, libraries interleaved; ` +
    `median (min-max) over trials; every ratio compares medians from this run.${config.quick ? ' **Quick smoke run: not for quoting.**' : ''}`)
  L.push('')
  L.push(`Machine: ${env.cpuModel}, ${env.cores} cores${env.virtualized ? ' (VM)' : ''}, ${env.memoryGb} GiB, Linux ${env.kernel}, ` +
    `${env.mountFsType} on ${env.mountSource} (${env.mountOptions}; device write cache: ${env.deviceWriteCache ?? '?'}), ` +
    `Node ${env.node}. seglog ${env.seglogVersion} at ${env.gitCommit}${env.gitDirty ? ' + uncommitted changes' : ''} (build ${env.benchBuildId}). ` +
    `Peers: ${Object.entries(env.libraries).map(([k, v]) => `${k} ${v ?? 'not installed'}`).join(', ')}; SQLite ${env.sqliteVersion ?? '?'}.`)
  L.push('')
  L.push('## Goals (issue 6)')
  L.push('')
  L.push('| goal | measured | status |')
  L.push('| --- | ---: | --- |')
  for (const g of goals) L.push(`| ${g.text} | ${g.ratio === undefined ? '-' : `${g.ratio.toFixed(2)}x`} | ${g.status}${g.why ? ` (${g.why})` : ''} |`)
  L.push('')
  L.push('## Configuration')
  L.push('')
  L.push('- 100 B records unless noted. **Volatile** cases sync nothing (seglog `durability: \'none\'`, lmdb `noSync`, SQLite WAL `synchronous=OFF`, classic-level default, hypercore default); ' +
    '**durable** cases resolve an append only once it is on stable storage (seglog `appendDurable` with `durability: \'sync\'`, hand-rolled file group-committed `fdatasync`, ' +
    'lmdb default `put` then `await db.flushed`, SQLite WAL `synchronous=FULL` autocommit, classic-level `put(k, v, { sync: true })`).')
  L.push('- hand-rolled file: CRC-32 framed records staged in a 1 MiB buffer and written with `fs.writeSync` (crc-32 below 4 KiB, zlib.crc32 above), an in-memory position index, full CRC scan at open.')
  L.push('- memcpy: mitata `measure` of one `Buffer.copy` of the record into a prefaulted 256 MiB ring (median time per copy).')
  L.push(`- Windows: ${config.windowMs} ms (capped at ${Object.entries(config.maxOps).map(([b, n]) => `${n.toLocaleString('en-US')} x ${b} B`).join(', ')}); durable: ${config.durableWarmupMs} ms warm-up + ${config.durableWindowMs} ms; ` +
    `reads on ${config.readRecords.toLocaleString('en-US')} records written once per run (page cache warm); key-value gets on ${config.kvKeys.toLocaleString('en-US')} keys; ` +
    `open: a fresh copy of a ${(config.imageBytes / 2 ** 20).toFixed(0)} MiB log (100 B payloads) whose writer was killed with SIGKILL, timed from open until the next offset is known.`)
  L.push('- open-1GiB: every library opens a fresh copy of its crashed log per trial; hypercore refuses to open a copied directory (\'Invalid device file, was moved unsafely\'), so it has no figure there.')
  L.push('- Async APIs (lmdb `put`, classic-level, hypercore) run with 1000 calls in flight; durable cases run N callers, each awaiting one append at a time.')
  L.push('')
  for (const w of workloads) {
    L.push(`## ${w.label} (\`${w.id}\`${w.durable ? ', durable' : w.kind === 'append' || w.kind === 'kv' ? ', volatile' : ''})`)
    L.push('')
    const ack = w.kind === 'durable'
    L.push(`| library | median | min-max | x ${BASELINE} | ${w.lowerIsBetter ? 'on disk MB' : 'MB/s'} | CPU ${w.lowerIsBetter ? 'ms' : 'ns/op'} |${ack ? ' ack p50 / p99 ms |' : ''} API |`)
    L.push(`| --- | ---: | ---: | ---: | ---: | ---: |${ack ? ' ---: |' : ''} --- |`)
    for (const l of libraries) {
      const s = summary[w.id]?.[l.id]
      if (!s) continue
      if (s.median === undefined) {
        if (s.na) continue
        L.push(`| ${labelFor(l, w)} | ${s.unavailable ? `unavailable: ${s.unavailable.replace(/\|/g, '/')}` : 'failed'} |  |  |  |  |${ack ? '  |' : ''}  |`)
        continue
      }
      const cpu = w.lowerIsBetter ? s.cpuMs?.median.toFixed(1) ?? '' : s.cpuNsPerOp.median.toFixed(0)
      L.push(`| ${labelFor(l, w)} | ${fmtValue(w, s.median)} | ${fmtValue(w, s.min)} - ${fmtValue(w, s.max)} | ${fmtX(s.xBaseline)} | ` +
        `${w.lowerIsBetter ? s.diskMb ?? '' : s.mbPerS.median.toFixed(0)} | ${cpu} |` +
        `${ack ? ` ${s.ackMsP50.median.toFixed(2)} / ${s.ackMsP99.median.toFixed(2)} |` : ''} ${s.api ?? ''}${s.recordsLost ? `${s.api ? '; ' : ''}${s.recordsLost.toLocaleString('en-US')} unflushed records lost at the kill` : ''} |`)
    }
    L.push('')
  }
  L.push(`Charts: ${Object.keys(charts(result)).map((f) => `[${f}](${f})`).join(', ')}.`)
  L.push('')
  if (result.failures.length) {
    L.push('## Failures')
    L.push('')
    for (const f of result.failures) L.push(`- trial ${f.trial}, ${f.workload}, ${f.library}: ${f.error}`)
    L.push('')
  }
  const contended = result.runs.filter((r) => r.cpuBusyBefore > config.busyWarn).length
  L.push(`${result.runs.length} runs, ${result.failures.length} failed, ${result.elapsedS.toFixed(0)} s. ` +
    (contended ? `${contended} runs started while other processes kept the CPUs over ${config.busyWarn * 100}% busy (flagged in latest.json).` : ''))
  L.push('')
  return L.join('\n')
}

export function stdoutSummary(result) {
  const L = ['', `seglog vs peers, median of ${result.config.trials} trial(s)${result.config.quick ? ' (quick smoke run, not for quoting)' : ''}:`]
  for (const w of result.workloads) {
    const row = Object.entries(result.summary[w.id] ?? {}).filter(([, s]) => s.median !== undefined)
    if (row.length === 0) continue
    L.push(`  ${w.id.padEnd(18)} ` + row.map(([id, s]) => `${id} ${fmtValue(w, s.median)} (${fmtX(s.xBaseline)})`).join(', '))
  }
  L.push('', 'goals:')
  for (const g of result.goals) L.push(`  ${g.status === 'met' ? 'MET   ' : g.status === 'missed' ? 'MISSED' : 'n/m   '} ${g.text}: ${g.ratio === undefined ? g.why : `${g.ratio.toFixed(2)}x`}`)
  return L.join('\n')
}

// ---------------------------------------------------------------------------
// Charts: one SVG per workload family, horizontal bars per library, longer is faster,
// labelled with the figure and "N.Nx" relative to the baseline; whiskers show min-max.

const FAMILIES = {
  append: 'Volatile appends',
  durable: 'Durable appends (acknowledged once on stable storage)',
  read: 'Reads (page cache warm)',
  open: 'Open and recovery after kill -9',
  kv: 'Key-value store, volatile',
}
const COLORS = { seglog: '#d9480f', 'seglog-js': '#f08c00', 'hand-rolled': '#5c940d', lmdb: '#1c7ed6', 'better-sqlite3': '#6741d9', 'classic-level': '#0ca678', hypercore: '#c2255c', memcpy: '#868e96' }

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

export function charts(result) {
  const out = {}
  for (const [family, title] of Object.entries(FAMILIES)) {
    const ws = result.workloads.filter((w) => w.family === family)
    if (ws.length === 0) continue
    out[`${family}.svg`] = chart(title, ws, result)
  }
  return out
}

function chart(title, ws, result) {
  const W = 900
  const labelW = 190
  const barMax = 480
  const rowH = 22
  const parts = []
  let y = 48
  for (const w of ws) {
    const rows = result.libraries.map((l) => ({ l, s: result.summary[w.id]?.[l.id] })).filter((r) => r.s && !r.s.na)
    const speed = (x) => (w.lowerIsBetter ? 1 / x : x)
    const measured = rows.filter((r) => r.s.median !== undefined)
    const top = Math.max(...measured.map((r) => speed(w.lowerIsBetter ? r.s.min : r.s.max)), 0)
    parts.push(`<text x="12" y="${y}" class="h">${esc(w.label)}${w.durable ? ' (durable)' : ''} - ${esc(w.lowerIsBetter ? 'time, bar = speed' : w.unit)}</text>`)
    y += 10
    measured.sort((a, b) => speed(b.s.median) - speed(a.s.median))
    for (const { l, s } of [...measured, ...rows.filter((r) => r.s.median === undefined)]) {
      const cy = y + rowH / 2
      parts.push(`<text x="${labelW - 8}" y="${cy + 4}" text-anchor="end">${esc(labelFor(l, w))}</text>`)
      if (s.median === undefined) {
        const why = s.unavailable ? `unavailable: ${s.unavailable}` : 'failed'
        parts.push(`<text x="${labelW}" y="${cy + 4}" class="na">${esc(why.length > 90 ? why.slice(0, 87) + '...' : why)}</text>`)
      } else {
        const len = top > 0 ? Math.max(1.5, (speed(s.median) / top) * barMax) : 0
        const color = COLORS[l.id] ?? '#495057'
        parts.push(`<rect x="${labelW}" y="${y + 3}" width="${len.toFixed(1)}" height="${rowH - 6}" fill="${color}" rx="2"/>`)
        let end = labelW + len
        if (s.trials > 1) {
          const a = labelW + (speed(w.lowerIsBetter ? s.max : s.min) / top) * barMax
          const b = labelW + (speed(w.lowerIsBetter ? s.min : s.max) / top) * barMax
          parts.push(`<line x1="${a.toFixed(1)}" x2="${b.toFixed(1)}" y1="${cy}" y2="${cy}" class="wh"/>`)
          parts.push(`<line x1="${b.toFixed(1)}" x2="${b.toFixed(1)}" y1="${cy - 4}" y2="${cy + 4}" class="wh"/>`)
          end = Math.max(end, b)
        }
        const x = s.xBaseline === undefined ? '' : fmtX(s.xBaseline)
        const mb = w.kind === 'append' && w.bytes >= 1024 && s.mbPerS ? ` (${(s.mbPerS.median / 1000).toFixed(2)} GB/s)` : ''
        parts.push(`<text x="${(end + 6).toFixed(1)}" y="${cy + 4}"><tspan class="x">${esc(x)}</tspan> ${esc(fmtValue(w, s.median) + mb)}</text>`)
      }
      y += rowH
    }
    y += 18
  }
  const env = result.env
  const foot1 = `${result.config.trials} trial(s), one process each; bar = median, whisker = min-max; Nx = speed relative to ${BASELINE} in the same run` +
    (result.config.quick ? ' (quick smoke run, not for quoting)' : '')
  const foot2 = `${env.cpuModel}, ${env.cores} cores, Linux ${env.kernel}, ${env.mountFsType}, Node ${env.node}, seglog ${env.gitCommit}, ${result.date.slice(0, 10)}`
  const H = y + 36
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="12">
<style>.h{font-weight:600;font-size:13px}.t{font-weight:700;font-size:15px}.x{font-weight:700}.na{fill:#868e96;font-style:italic}.wh{stroke:#212529;stroke-width:1.2}.f{fill:#495057;font-size:10.5px}</style>
<rect width="100%" height="100%" fill="#fff"/>
<text x="12" y="24" class="t">${esc(title)}</text>
${parts.join('\n')}
<text x="12" y="${H - 24}" class="f">${esc(foot1)}</text>
<text x="12" y="${H - 10}" class="f">${esc(foot2)}</text>
</svg>
`
}
