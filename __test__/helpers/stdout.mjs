// For child fixtures: write to stdout synchronously, so a line the parent reads was
// written before anything that follows it happened (stdout may be a non-blocking pipe).
import fs from 'node:fs'

export function writeOut(text) {
  const bytes = Buffer.from(text)
  for (let at = 0; at < bytes.length; ) {
    try {
      at += fs.writeSync(1, bytes, at)
    } catch (err) {
      if (err.code !== 'EAGAIN') throw err
    }
  }
}
