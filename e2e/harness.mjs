// Starts and stops Hearth processes for the end-to-end tests. Every server binds to loopback
// on free ports, and every run uses its own network-slot prefix and pool, so tests never
// collide with a `hearth dev` the developer is running.
import { spawn, execFileSync } from 'node:child_process'
import { mkdirSync, rmSync, existsSync, createWriteStream, readFileSync, renameSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import net from 'node:net'
import http from 'node:http'

export const hearthBin = process.env.HEARTH_BIN
export const stateRoot = process.env.HEARTH_E2E_DATA || '/var/lib/hearth-e2e'
// Every process's full output goes to a file here, for post-mortems.
export const logDir = process.env.HEARTH_E2E_LOGS || '/tmp/hearth-e2e-logs'
mkdirSync(logDir, { recursive: true })

// freePorts returns n distinct free loopback ports: all n listeners are open at once, so the
// kernel cannot hand the same port out twice. Take every port a topology needs in one call,
// before starting any process, and give every listener of the processes a port from it:
// a process binding port 0 later could otherwise take a port handed out but not yet bound.
export async function freePorts(n) {
  const servers = []
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer()
      await new Promise((resolve, reject) => { s.once('error', reject); s.listen(0, '127.0.0.1', resolve) })
      servers.push(s)
    }
    return servers.map((s) => s.address().port)
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  }
}

export async function waitFor(what, fn, timeoutMs = 60_000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`${what}: not ready within ${timeoutMs} ms${last ? `: ${last.message}` : ''}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

// A running hearth process with its output kept for failure reports. wrap, if given, is a
// command hearth runs under (e.g. ['nsenter', '--net=/run/netns/NS'], which execs it in
// place: the child is hearth itself).
export class Proc {
  constructor(name, args, env = {}, wrap = []) {
    this.name = name
    this.args = args
    this.output = ''
    this.logFile = join(logDir, name.replace(/[^a-z0-9]+/gi, '-') + '.log')
    const log = createWriteStream(this.logFile, { flags: 'a' })
    const [cmd, ...argv] = [...wrap, hearthBin, ...args]
    this.child = spawn(cmd, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    const keep = (d) => {
      log.write(d)
      this.output += d.toString()
      if (this.output.length > 200_000) this.output = this.output.slice(-100_000)
      if (process.env.HEARTH_E2E_VERBOSE) process.stderr.write(`[${name}] ${d}`)
    }
    this.child.stdout.on('data', keep)
    this.child.stderr.on('data', keep)
    this.exited = new Promise((resolve) => this.child.on('exit', (code, sig) => resolve({ code, sig })))
  }

  async stop(signal = 'SIGTERM') {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    this.child.kill(signal)
    const t = setTimeout(() => this.child.kill('SIGKILL'), 20_000)
    await this.exited
    clearTimeout(t)
  }

  tail(n = 4000) {
    return `--- ${this.name} output ---\n${this.output.slice(-n)}`
  }
}

// dataDir returns a data dir under the state root with no state from earlier runs but the
// base template. The template is built once per run of the suites, in the state root's
// `seed` dir (debootstrap and apt: minutes, and only when its recipe or envd changed), and
// copied into each data dir whose copy differs from it, so the suites do not build it one
// each. The runtime's own leftovers are the agent's to reclaim at start.
export function dataDir(name) {
  const dir = join(stateRoot, name)
  for (const sub of ['hearth.db', 'hearth.db-wal', 'hearth.db-shm', 'sandboxes', 'api-key']) {
    rmSync(join(dir, sub), { recursive: true, force: true })
  }
  mkdirSync(join(dir, 'templates'), { recursive: true })
  const seedBase = seedTemplate()
  const base = join(dir, 'templates', 'base')
  if (buildOf(base) !== buildOf(seedBase)) {
    rmSync(base, { recursive: true, force: true })
    execFileSync('cp', ['-a', seedBase, base], { stdio: 'inherit', timeout: 600_000 })
  }
  // Brings envd up to date in the copy (a no-op when it is).
  execFileSync(hearthBin, ['template', 'build', 'base', '--data-dir', dir, '--envd', process.env.ENVD_BIN], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 900_000 })
  return dir
}

let seeded = ''
function seedTemplate() {
  if (!seeded) {
    const seed = join(stateRoot, 'seed')
    mkdirSync(join(seed, 'templates'), { recursive: true })
    shareTestBase(join(seed, 'templates', 'base'))
    execFileSync(hearthBin, ['template', 'build', 'base', '--data-dir', seed, '--envd', process.env.ENVD_BIN], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 900_000 })
    seeded = join(seed, 'templates', 'base')
  }
  return seeded
}

// shareTestBase starts the seed from the base template the Go tests built (make test builds
// it first, in HEARTH_TEST_DATA), by hard links: one debootstrap per run instead of two. The
// build that follows rebuilds it if its recipe is not current, and replaces envd by rename,
// so the shared inodes are never written.
function shareTestBase(seedBase) {
  const shared = join(process.env.HEARTH_TEST_DATA || '/var/lib/hearth-test', 'templates', 'base')
  if (existsSync(seedBase) || !existsSync(join(shared, 'meta.json'))) return
  const tmp = seedBase + '.linking'
  rmSync(tmp, { recursive: true, force: true })
  try {
    execFileSync('cp', ['-al', shared, tmp], { stdio: 'inherit', timeout: 120_000 })
    renameSync(tmp, seedBase)
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true }) // another filesystem: build the seed instead
    console.error(`e2e: not sharing the Go tests' base template: ${e.message}`)
  }
}

// buildOf is a template's build ID: a copy with the seed's is the same build (its envd may
// differ; the template build call refreshes that).
function buildOf(templateDir) {
  try {
    return JSON.parse(readFileSync(join(templateDir, 'meta.json'), 'utf8')).build_id || ''
  } catch {
    return ''
  }
}

// ownDatabase creates a database of its own on the e2e PostgreSQL server (pgURL) and returns
// its URL, so a suite's hosts (left down when it ends) are not in the other suites' host
// lists.
export function ownDatabase(pgURL, name) {
  const u = new URL(pgURL)
  const createdb = readdirSync('/usr/lib/postgresql').map((v) => `/usr/lib/postgresql/${v}/bin/createdb`).find((p) => existsSync(p)) || 'createdb'
  execFileSync(createdb, ['-h', u.hostname, '-p', u.port, '-U', u.username || 'postgres', name], { stdio: 'inherit' })
  u.pathname = '/' + name
  return u.toString()
}

export async function apiReady(apiUrl, key) {
  await waitFor('control plane answers', async () => (await fetch(`${apiUrl}/health`)).ok)
  // The agent has registered once the base template is listed.
  await waitFor('agent registered with the base template', async () => {
    const r = await fetch(`${apiUrl}/templates`, { headers: { 'X-API-Key': key } })
    if (!r.ok) return false
    return (await r.json()).some((t) => t.templateID === 'base')
  }, 180_000, 250)
}

// rawGet does a GET to 127.0.0.1:port with an arbitrary Host header (fetch forbids setting it).
export function rawGet(port, path, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers, method: 'GET' }, (res) => {
      let body = ''
      res.on('data', (d) => { body += d })
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

// wsOpen opens a WebSocket to 127.0.0.1:port/path (Node 20 has no WebSocket client) and
// collects the server's text messages and its close frame. Frames from a server are unmasked;
// this reader handles the small frames the tests' servers send.
export function wsOpen(port, path) {
  return new Promise((resolve, reject) => {
    const key = Buffer.from(String(Math.random())).toString('base64')
    const req = http.request({ host: '127.0.0.1', port, path, headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': key } })
    req.on('error', reject)
    req.on('response', (res) => reject(new Error(`WebSocket upgrade refused: ${res.statusCode}`)))
    req.on('upgrade', (res, sock, head) => {
      const ws = { messages: [], close: null }
      let buf = head
      let onClosed
      ws.closed = new Promise((r) => { onClosed = r })
      const parse = () => {
        while (buf.length >= 2) {
          let len = buf[1] & 0x7f
          let off = 2
          if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4 }
          if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10 }
          if (buf.length < off + len) return
          const opcode = buf[0] & 0x0f
          const payload = buf.subarray(off, off + len)
          buf = buf.subarray(off + len)
          if (opcode === 1) ws.messages.push(payload.toString())
          if (opcode === 8) ws.close = { code: len >= 2 ? payload.readUInt16BE(0) : 1005, reason: payload.subarray(2).toString() }
        }
      }
      sock.on('data', (d) => { buf = Buffer.concat([buf, d]); parse() })
      sock.on('error', () => {})
      sock.on('close', () => onClosed(ws.close ?? { code: 1006, reason: 'connection closed without a close frame' }))
      ws.socket = sock
      parse()
      resolve(ws)
    })
    req.end()
  })
}

export const testKey = 'e2b_' + 'ab12'.repeat(10)
export { existsSync }

// An "internet" for sandboxes to reach, all on this machine: a network namespace joined to
// the host by a veth, holding world.addrs (TEST-NET-2 addresses, which no deny list of the
// host covers) with an HTTP server on port 80 of each that answers "world <its address>".
// Sandboxes reach it through their slots' NAT exactly as they would reach a public server.
export function startOutsideWorld() {
  const ns = `he2e-world-${process.pid}`
  const hostIf = `he2ew${process.pid % 100000}`
  const subnet = '198.51.100'
  const addrs = [`${subnet}.2`, `${subnet}.3`]
  const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] })
  const stop = () => {
    try { ip('link', 'del', hostIf) } catch {}
    try { ip('netns', 'del', ns) } catch {}
  }
  stop()
  ip('netns', 'add', ns)
  ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns)
  ip('addr', 'add', `${subnet}.1/24`, 'dev', hostIf)
  ip('link', 'set', hostIf, 'up')
  for (const a of addrs) ip('-n', ns, 'addr', 'add', `${a}/24`, 'dev', 'eth0')
  ip('-n', ns, 'link', 'set', 'eth0', 'up')
  ip('-n', ns, 'link', 'set', 'lo', 'up')
  ip('-n', ns, 'route', 'add', 'default', 'via', `${subnet}.1`)
  // Idle keep-alive connections stay open for a minute, so a test can tell a connection
  // Hearth cut from one the server timed out.
  const server = `const s = require('http').createServer((q, r) => r.end('world ' + q.socket.localAddress)); s.keepAliveTimeout = 60000; s.listen(80, '0.0.0.0')`
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', server], { stdio: 'ignore' })
  return {
    addrs,
    async ready() {
      await waitFor('outside world answers', async () => {
        const out = execFileSync('ip', ['netns', 'exec', ns, 'curl', '-sS', '-m', '2', `http://${addrs[0]}/`]).toString()
        return out.startsWith('world')
      }, 10_000, 100)
    },
    stop() {
      child.kill('SIGKILL')
      stop()
    },
  }
}

// eventsUntilMarker runs op under a watch of sbx's directory wd and returns its events as
// "type name": after op a marker directory is made, and events arrive in order, so those
// before the marker's are op's.
export async function eventsUntilMarker(sbx, wd, opts, op) {
  const events = []
  const watcher = await sbx.files.watchDir(wd, (e) => events.push(`${e.type} ${e.name}`), opts)
  try {
    await op()
    await sbx.files.makeDir(join(wd, '.marker'))
    const deadline = Date.now() + 5000
    while (Date.now() < deadline && !events.includes('create .marker')) {
      await new Promise((r) => setTimeout(r, 20))
    }
  } finally {
    await watcher.stop()
  }
  const i = events.indexOf('create .marker')
  if (i < 0) throw new Error(`no marker event in ${JSON.stringify(events)}`)
  await sbx.files.remove(join(wd, '.marker'))
  return events.slice(0, i)
}

// startDev runs `hearth dev` over data dir `name` on free loopback ports, with its own slot
// prefix and address pool, points the SDK at it (the E2B_* variables) and waits for its API.
export async function startDev(label, name, prefix, pool) {
  const [api, proxy, arpc, aproxy] = await freePorts(4)
  const dir = dataDir(name)
  const dev = new Proc(label, ['dev', '--data-dir', dir, '--api-key', testKey,
    '--listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${proxy}`,
    '--agent-listen', `127.0.0.1:${arpc}`, '--agent-proxy-listen', `127.0.0.1:${aproxy}`,
    '--slot-prefix', prefix, '--pool', pool])
  process.env.E2B_API_URL = `http://127.0.0.1:${api}`
  process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxy}`
  process.env.E2B_API_KEY = testKey
  await apiReady(`http://127.0.0.1:${api}`, testKey).catch((e) => { console.error(dev.tail()); throw e })
  return { dev, dir, api, proxy }
}
