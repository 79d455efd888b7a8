// Test-only TimescaleDB server: PGlite (PostgreSQL 17.5 in WASM) with TimescaleDB 2.23 (TSL build),
// served over the PostgreSQL wire protocol on loopback by pglite-socket. One client connection at a
// time; COPY FROM STDIN is not supported; background jobs never run (use CALL run_job(id)).
// Env: F2_PGLITE_PORT (default 55450), F2_PGLITE_DATA_DIR (default: in memory).
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const port = parseInt(process.env.F2_PGLITE_PORT || '55450', 10)
const dataDir = process.env.F2_PGLITE_DATA_DIR || undefined
const db = await PGlite.create({ dataDir, extensions: { timescaledb } })
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb;')
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1', maxConnections: 1 })
await server.start()
console.log(`ready: PGlite+TimescaleDB listening on 127.0.0.1:${port}`)

let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  await server.stop()
  await db.close()
  process.exit(0)
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
