// End-to-end tests of the whole platform with the published e2b SDK: `hearth dev` with
// SQLite, then `hearth server` on PostgreSQL with two `hearth agent` processes, a control
// plane restart in the middle, and sandboxes spread across both agents.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { Sandbox, SandboxNotFoundError, TimeoutError, ALL_TRAFFIC, FilesystemEventType } from 'e2b'
import { Proc, freePorts, dataDir, apiReady, rawGet, wsOpen, testKey, waitFor, hearthBin, startOutsideWorld, eventsUntilMarker } from './harness.mjs'

if (!hearthBin) throw new Error('HEARTH_BIN must point at the hearth binary')

function useEnv(apiPort, proxyPort) {
  process.env.E2B_API_URL = `http://127.0.0.1:${apiPort}`
  process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxyPort}`
  process.env.E2B_API_KEY = testKey
}

// The outside world every suite's sandboxes may or may not reach (see startOutsideWorld).
const world = startOutsideWorld()
before(() => world.ready())
after(() => world.stop())

// The agents resolve the test's domain to the outside world (there is no DNS here).
const egressResolve = ['--egress-resolve', `world.test=${world.addrs[0]}`]

const procs = []
function track(p) { procs.push(p); return p }
function logsNote() {
  console.error(`hearth process logs: ${procs.map((p) => p.logFile).join(' ')}`)
}

// waitGone waits until the API no longer knows sandbox id (killed, on its timeout here).
function waitGone(what, id, timeoutMs) {
  return waitFor(what, async () => {
    try {
      await Sandbox.getInfo(id)
      return false
    } catch (e) {
      return e instanceof SandboxNotFoundError
    }
  }, timeoutMs, 250)
}

// The suite every topology must pass. canFork: whether the runtime can copy running sandboxes.
function platformSuite(getEnv, { canFork = true, quickPause = true } = {}) {
  test('another team sees none of this team\'s sandboxes; its revoked key stops at once', async () => {
    const made = JSON.parse(execFileSync(hearthBin, ['team', 'create', `e2e-other-${Date.now()}`, '--json', ...getEnv().storeArgs], { encoding: 'utf8' }))
    const other = { apiKey: made.key }
    const mine = await Sandbox.create('base', { timeoutMs: 120_000 })
    let theirs
    try {
      const id = mine.sandboxId
      assert.ok(!(await Sandbox.list(other).nextItems()).some((s) => s.sandboxId === id))
      await assert.rejects(Sandbox.getInfo(id, other), SandboxNotFoundError)
      await assert.rejects(Sandbox.connect(id, other), SandboxNotFoundError)
      await assert.rejects(Sandbox.setTimeout(id, 1000, other), SandboxNotFoundError)
      await assert.rejects(Sandbox.pause(id, other), SandboxNotFoundError)
      assert.equal(await Sandbox.kill(id, other), false) // the SDK's answer for a 404
      // Untouched by all of that.
      assert.equal((await mine.commands.run('echo still-mine')).stdout, 'still-mine\n')
      assert.equal((await Sandbox.getInfo(id)).state, 'running')

      // The other team creates from the public base; this team does not see it.
      theirs = await Sandbox.create('base', { ...other, timeoutMs: 120_000 })
      assert.equal((await theirs.commands.run('echo theirs')).stdout, 'theirs\n')
      assert.ok(!(await Sandbox.list().nextItems()).some((s) => s.sandboxId === theirs.sandboxId))
      assert.deepEqual((await Sandbox.list(other).nextItems()).map((s) => s.sandboxId), [theirs.sandboxId])

      // A key made through the API works until it is revoked, then at once not.
      const api = process.env.E2B_API_URL
      const res = await fetch(`${api}/api-keys`, { method: 'POST', headers: { 'X-API-Key': made.key, 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'e2e' }) })
      assert.equal(res.status, 201)
      const created = await res.json()
      assert.equal((await Sandbox.list({ apiKey: created.key }).nextItems()).length, 1)
      assert.equal((await fetch(`${api}/api-keys/${created.id}`, { method: 'DELETE', headers: { 'X-API-Key': made.key } })).status, 204)
      await assert.rejects(Sandbox.list({ apiKey: created.key }).nextItems(), /401|invalid|unauthori/i)
    } finally {
      await mine.kill()
      if (theirs) await Sandbox.kill(theirs.sandboxId, other)
    }
  })

  test('create, list with metadata filter, getInfo', async () => {
    const tag = `run-${Date.now()}`
    const a = await Sandbox.create('base', { metadata: { suite: tag, role: 'a', 'odd key&x': 'v=1 %' }, timeoutMs: 120_000 })
    const b = await Sandbox.create('base', { metadata: { suite: tag, role: 'b' }, timeoutMs: 120_000 })
    try {
      const page = await Sandbox.list({ query: { metadata: { suite: tag, 'odd key&x': 'v=1 %' } } }).nextItems()
      assert.deepEqual(page.map((s) => s.sandboxId), [a.sandboxId])
      const info = await Sandbox.getInfo(b.sandboxId)
      assert.equal(info.state, 'running')
      assert.equal(info.metadata.role, 'b')
      assert.ok(info.envdVersion >= '0.6.4')
    } finally {
      await a.kill()
      await b.kill()
    }
  })

  test('commands, files and PTY through the proxy', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 120_000, envs: { FROM_CREATE: 'yes' } })
    try {
      const r = await sbx.commands.run('echo $FROM_CREATE $(whoami) $(pwd)')
      assert.equal(r.stdout, 'yes user /home/user\n')
      const py = await sbx.commands.run('python --version && git --version && curl --version | head -1')
      assert.match(py.stdout, /Python 3/)
      await sbx.files.write('/home/user/hello.txt', 'hi from the SDK')
      assert.equal(await sbx.files.read('/home/user/hello.txt'), 'hi from the SDK')
      const ls = await sbx.files.list('/home/user')
      assert.ok(ls.some((e) => e.name === 'hello.txt'))
      // Uploads and the directories they create belong to the user, who can chmod them.
      await sbx.files.write('/home/user/new/dir/run.sh', 'echo ran')
      const own = await sbx.commands.run('stat -c %U /home/user/new /home/user/new/dir /home/user/new/dir/run.sh && chmod +x /home/user/new/dir/run.sh && /home/user/new/dir/run.sh')
      assert.equal(own.stdout, 'user\nuser\nuser\nran\n')
      // gVisor ignores setuid bits, so sudo cannot work there; root is one option away.
      const root = await sbx.commands.run('id -u', { user: 'root' })
      assert.equal(root.stdout.trim(), '0')

      let out = ''
      const term = await sbx.pty.create({ cols: 100, rows: 30, onData: (d) => { out += new TextDecoder().decode(d) } })
      await sbx.pty.sendInput(term.pid, new TextEncoder().encode('stty size; exit\n'))
      await term.wait()
      assert.match(out, /30 100/)
    } finally {
      await sbx.kill()
    }
  })

  // The sandbox's own kernel (gVisor's or the VM's inotify) reports an upload as E2B's
  // in-place write, never its staging file.
  test('watchDir sees files.write as a write, recursive watches too', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 120_000 })
    try {
      const { CREATE: c, CHMOD: m, WRITE: w } = FilesystemEventType
      await sbx.files.makeDir('/home/user/w/sub')
      let got = await eventsUntilMarker(sbx, '/home/user/w', {}, () => sbx.files.write('/home/user/w/a.txt', 'one'))
      assert.deepEqual(got, [`${c} a.txt`, `${m} a.txt`, `${w} a.txt`])
      got = await eventsUntilMarker(sbx, '/home/user/w', { recursive: true }, () => sbx.files.write('/home/user/w/sub/a.txt', 'two'))
      assert.deepEqual(got, [`${c} sub/a.txt`, `${m} sub/a.txt`, `${w} sub/a.txt`])
    } finally {
      await sbx.kill()
    }
  })

  test('http server reached through all three routing forms', async () => {
    const { proxyPort } = getEnv()
    const sbx = await Sandbox.create('base', { timeoutMs: 120_000 })
    try {
      await sbx.commands.run('mkdir -p /home/user/site/dir && echo root-page > /home/user/site/index.html && echo in-dir > /home/user/site/dir/index.html')
      await sbx.commands.run('cd /home/user/site && python3 -m http.server 8000 --bind 127.0.0.1', { background: true })
      const id = sbx.sandboxId
      // Header form (what the SDKs send); the server is bound to 127.0.0.1 only, so this also
      // proves envd's port forwarder.
      const viaHeaders = await waitFor('server up', async () => {
        const r = await rawGet(proxyPort, '/', { 'E2b-Sandbox-Id': id, 'E2b-Sandbox-Port': '8000' })
        return r.status === 200 && r
      }, 20_000, 250)
      assert.equal(viaHeaders.body, 'root-page\n')
      // Host form (hearth dev's domain is hearth.localhost; hearth server here accepts any).
      const viaHost = await rawGet(proxyPort, '/dir/', { Host: `8000-${id}.hearth.localhost:${proxyPort}` })
      assert.equal(viaHost.status, 200)
      assert.equal(viaHost.body, 'in-dir\n')
      // Path form: a directory redirect keeps the prefix.
      const redirect = await rawGet(proxyPort, `/proxy/${id}/8000/dir`)
      assert.equal(redirect.status, 301)
      assert.equal(new URL(redirect.headers.location, 'http://x').pathname, `/proxy/${id}/8000/dir/`)
      const viaPath = await rawGet(proxyPort, `/proxy/${id}/8000/dir/`)
      assert.equal(viaPath.body, 'in-dir\n')
      // Errors name what is wrong.
      const closed = await rawGet(proxyPort, `/proxy/${id}/9999/`)
      assert.equal(closed.status, 502)
      assert.match(JSON.parse(closed.body).message, /^The sandbox is running but port is not open/)
      assert.equal(JSON.parse(closed.body).port, 9999)
      const unknown = await rawGet(proxyPort, '/proxy/nosuchsandbox00000000/8000/')
      assert.equal(unknown.status, 502)
      assert.match(JSON.parse(unknown.body).message, /^The sandbox was not found/)
    } finally {
      await sbx.kill()
    }
  })

  test('outbound network policy: allowInternetAccess, allowOut/denyOut, updateNetwork, kept across pause', async () => {
    const [allowed, other] = world.addrs
    // What a sandbox gets from curl to each world address: the page, or curl's exit code.
    const reach = async (sbx) => {
      const out = []
      for (const a of world.addrs) {
        const r = await sbx.commands.run(`curl -sS -m 5 http://${a}/ || echo "exit $?"`)
        out.push(r.stdout.trim())
      }
      return out
    }
    const open = [`world ${allowed}`, `world ${other}`]
    const free = await Sandbox.create('base', { timeoutMs: 120_000 })
    const closed = await Sandbox.create('base', { timeoutMs: 120_000, allowInternetAccess: false, network: { allowPublicTraffic: false } })
    try {
      // allowPublicTraffic false: its ports need the traffic token (envd has its own token).
      const { proxyPort } = getEnv()
      await closed.commands.run('cd /tmp && echo private > index.html && python3 -m http.server 8000', { background: true })
      const hdr = { 'E2b-Sandbox-Id': closed.sandboxId, 'E2b-Sandbox-Port': '8000' }
      const withToken = await waitFor('server up', async () => {
        const r = await rawGet(proxyPort, '/', { ...hdr, 'E2b-Traffic-Access-Token': closed.trafficAccessToken })
        if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.body}`)
        return r
      }, 20_000, 250)
      assert.equal(withToken.body, 'private\n')
      assert.equal((await rawGet(proxyPort, '/', hdr)).status, 403)

      assert.deepEqual(await reach(free), open)
      // Refused at once (curl exit 7, "couldn't connect"), not a 5 s timeout (exit 28).
      const start = Date.now()
      assert.deepEqual(await reach(closed), ['exit 7', 'exit 7'])
      assert.ok(Date.now() - start < 4000, `denied connections took ${Date.now() - start} ms to fail`)
      const info = await Sandbox.getInfo(closed.sandboxId)
      assert.equal(info.allowInternetAccess, false)
      // Name lookups fail within the resolver's timeout instead of waiting out every retry
      // (denied UDP gets "port unreachable", which gVisor passes on; a minute per lookup before).
      const lookupStart = Date.now()
      const dns = await closed.commands.run('getent hosts example.com || echo "exit $?"')
      assert.equal(dns.stdout.trim(), 'exit 2')
      assert.ok(Date.now() - lookupStart < 15_000, `a denied lookup took ${Date.now() - lookupStart} ms`)

      // One address let through a deny-all; the update replaces the policy as a whole.
      await closed.updateNetwork({ denyOut: [ALL_TRAFFIC], allowOut: [allowed] })
      assert.deepEqual(await reach(closed), [`world ${allowed}`, 'exit 7'])
      const net = (await Sandbox.getInfo(closed.sandboxId)).network
      assert.deepEqual([net.allowOut, net.denyOut], [[`${allowed}/32`], ['0.0.0.0/0']])

      // The policy outlives a pause: the sandbox resumes into a new slot with it.
      assert.equal(await Sandbox.pause(closed.sandboxId), true)
      const resumed = await Sandbox.connect(closed.sandboxId)
      assert.deepEqual(await reach(resumed), [`world ${allowed}`, 'exit 7'])

      await resumed.updateNetwork({})
      assert.deepEqual(await reach(resumed), open)
      // Domains can only be allowed (by name, on ports 80 and 443), never denied: refused, not ignored.
      await assert.rejects(resumed.updateNetwork({ denyOut: ['example.com'] }), /allowed in allowOut only/)
      assert.deepEqual(await reach(resumed), open)
    } finally {
      await free.kill()
      await closed.kill()
    }
  })

  test('outbound domain allow-list: HTTP judged by its Host header on the host', async () => {
    const [allowed, other] = world.addrs
    const sbx = await Sandbox.create('base', { timeoutMs: 120_000, network: { denyOut: [ALL_TRAFFIC], allowOut: ['world.test'] } })
    try {
      // The sandbox has no name server for these test names: curl --resolve sends each
      // connection to a denied address, which the host hands to the agent's inspector. The
      // inspector lets world.test through, dialling the name as the agent resolves it
      // (--egress-resolve world.test=<allowed>), not the address the sandbox asked for.
      const ok = await sbx.commands.run(`curl -sS -m 5 --resolve world.test:80:${other} http://world.test/`)
      assert.equal(ok.stdout, `world ${allowed}`)
      const no = await sbx.commands.run(`curl -sS -m 5 -o /dev/null -w '%{http_code}' --resolve evil.test:80:${other} http://evil.test/ || true`)
      assert.equal(no.stdout, '403')
      // Other ports of denied addresses are refused as without domains.
      const port = await sbx.commands.run(`curl -sS -m 5 http://${other}:8080/ || echo "exit $?"`)
      assert.equal(port.stdout.trim(), 'exit 7')
      const net = (await Sandbox.getInfo(sbx.sandboxId)).network
      assert.deepEqual(net.allowOut, ['world.test'])

      // A connection the inspector let through ends when the policy no longer allows it.
      const keep = [
        'import socket, sys',
        `s = socket.create_connection(("${other}", 80), timeout=10)`,
        's.sendall(b"GET / HTTP/1.1\\r\\nHost: world.test\\r\\n\\r\\n")',
        'print(s.recv(4096).split(b"\\r\\n\\r\\n", 1)[1].decode(), flush=True)',
        'open("/tmp/ready", "w").close()',
        's.settimeout(50)',
        'print("closed" if s.recv(4096) == b"" else "more data", flush=True)',
      ].join('\n')
      await sbx.files.write('/tmp/keep.py', keep)
      const held = await sbx.commands.run('python3 /tmp/keep.py', { background: true })
      await waitFor('connection relayed', async () => (await sbx.commands.run('test -e /tmp/ready && echo yes || true')).stdout.trim() === 'yes', 20_000, 200)
      const cutAt = Date.now()
      await sbx.updateNetwork({ denyOut: [ALL_TRAFFIC] })
      const res = await held.wait()
      assert.equal(res.stdout, `world ${allowed}\nclosed\n`)
      assert.ok(Date.now() - cutAt < 10_000, `the connection ended ${Date.now() - cutAt} ms after the update`)
    } finally {
      await sbx.kill()
    }
  })

  test('fork copies files and running processes into new sandboxes', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 120_000, metadata: { role: 'parent' } })
    const made = []
    try {
      await sbx.files.write('/home/user/state.txt', 'before the fork')
      await sbx.commands.run('i=0; while true; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.1; done', { background: true })
      await waitFor('counter running', async () => (await sbx.commands.run('cat /tmp/n || true')).stdout.trim() !== '', 10_000, 200)
      if (!canFork) {
        await assert.rejects(sbx.fork({ count: 1 }), /cannot fork/)
        return
      }
      const children = await sbx.fork({ count: 2, timeoutMs: 60_000 })
      assert.equal(children.length, 2)
      for (const c of children) {
        assert.ok(!(c instanceof Error), `a child failed: ${c}`)
        made.push(c)
        assert.notEqual(c.sandboxId, sbx.sandboxId)
        assert.equal(await c.files.read('/home/user/state.txt'), 'before the fork')
        // The background loop was copied and runs in the child.
        const a = Number((await c.commands.run('cat /tmp/n')).stdout)
        await waitFor(`counter in ${c.sandboxId} advances past ${a}`, async () => Number((await c.commands.run('cat /tmp/n')).stdout) > a, 10_000, 200)
        assert.equal((await c.commands.run('echo $E2B_SANDBOX_ID')).stdout.trim(), c.sandboxId)
        assert.equal((await Sandbox.getInfo(c.sandboxId)).metadata.role, 'parent')
      }
      // From now on each sandbox's files are its own; the parent runs on.
      await made[0].files.write('/home/user/state.txt', 'changed in a child')
      assert.equal(await sbx.files.read('/home/user/state.txt'), 'before the fork')
      assert.equal(await made[1].files.read('/home/user/state.txt'), 'before the fork')
      assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running')
    } finally {
      for (const c of made) await c.kill()
      await sbx.kill()
    }
  })

  test('pause and resume keep files and a running process', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 120_000 })
    const id = sbx.sandboxId
    try {
      await sbx.files.write('/home/user/keep.txt', 'still here')
      // Each value is renamed into place so a reader never sees the file truncated but unwritten.
      await sbx.commands.run('i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done', { background: true })
      await new Promise((r) => setTimeout(r, 500))
      assert.equal(await Sandbox.pause(id), true)
      assert.equal(await Sandbox.pause(id), false, 'pausing a paused sandbox reports false')
      assert.equal((await Sandbox.getInfo(id)).state, 'paused')
      const before = Number((await (await Sandbox.connect(id)).commands.run('cat /tmp/count')).stdout)
      const again = await Sandbox.connect(id)
      assert.equal((await Sandbox.getInfo(id)).state, 'running')
      assert.equal(await again.files.read('/home/user/keep.txt'), 'still here')
      await new Promise((r) => setTimeout(r, 400))
      const after = Number((await again.commands.run('cat /tmp/count')).stdout)
      assert.ok(after > before, `counter advanced after resume (${before} -> ${after})`)
      // The guest's wall clock is the host's again after resume (VMs lag by the paused time
      // until envd's /init resets it).
      const guestNow = Number((await again.commands.run('date +%s')).stdout)
      assert.ok(Math.abs(guestNow - Date.now() / 1000) < 3, `guest clock ${guestNow} vs host ${Date.now() / 1000}`)
    } finally {
      await Sandbox.kill(id)
    }
  })

  test('pause ends streams at once and lets a request in flight finish', async () => {
    const { proxyPort } = getEnv()
    const sbx = await Sandbox.create('base', { timeoutMs: 180_000 })
    const id = sbx.sandboxId
    try {
      // A WebSocket server that sends a message every 100 ms, and an HTTP server whose answer
      // takes 2 s, both with the standard library only.
      await sbx.files.write('/tmp/servers.py', [
        'import base64, hashlib, http.server, socket, threading, time',
        'def ws(c):',
        '    req = b""',
        '    while b"\\r\\n\\r\\n" not in req: req += c.recv(4096)',
        '    key = [l.split(b":", 1)[1].strip() for l in req.split(b"\\r\\n") if l.lower().startswith(b"sec-websocket-key")][0]',
        '    acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())',
        '    c.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: " + acc + b"\\r\\n\\r\\n")',
        '    i = 0',
        '    while True:',
        '        m = ("tick %d" % i).encode(); i += 1',
        '        c.sendall(bytes([0x81, len(m)]) + m); time.sleep(0.1)',
        'def ws_server():',
        '    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 8002)); s.listen()',
        '    while True:',
        '        c, _ = s.accept(); threading.Thread(target=ws, args=(c,), daemon=True).start()',
        'class Slow(http.server.BaseHTTPRequestHandler):',
        '    def do_GET(self):',
        '        time.sleep(2); b = b"slow done"',
        '        self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)',
        'threading.Thread(target=ws_server, daemon=True).start()',
        'http.server.ThreadingHTTPServer(("0.0.0.0", 8003), Slow).serve_forever()',
      ].join('\n') + '\n')
      await sbx.commands.run('python3 /tmp/servers.py > /tmp/servers.log 2>&1', { background: true })
      await waitFor('servers listening', async () => (await sbx.commands.run('(echo > /dev/tcp/127.0.0.1/8002) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/8003) 2>/dev/null && echo up || true')).stdout.includes('up'), 20_000, 200)

      // Streams that never end by themselves: a command's output, a terminal, a watcher, a
      // WebSocket through the proxy.
      let ticks = ''
      const bg = await sbx.commands.run('i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.1; done', { background: true, onStdout: (d) => { ticks += d } })
      const bgEnd = bg.wait().then(() => null, (e) => e)
      const term = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {} })
      const termEnd = term.wait().then(() => null, (e) => e)
      await sbx.commands.run('mkdir -p /tmp/watched')
      let watchExit
      const watchEnded = new Promise((r) => { watchExit = r })
      await sbx.files.watchDir('/tmp/watched', () => {}, { onExit: (err) => watchExit(err ?? null) })
      const ws = await wsOpen(proxyPort, `/proxy/${id}/8002/`)
      await waitFor('WebSocket messages', async () => ws.messages.length >= 2, 10_000, 50)
      await waitFor('command output', async () => ticks.includes('tick 2'), 10_000, 50)

      let start = Date.now()
      assert.equal(await Sandbox.pause(id), true)
      const took = Date.now() - start
      if (quickPause) assert.ok(took < 4000, `pause with streams open took ${took} ms; it must not wait out the 5 s grace`)
      // Each stream saw a clean end that names the pause, not a cut connection.
      const close = await ws.closed
      assert.equal(close.code, 1001, `WebSocket close ${JSON.stringify(close)}`)
      assert.match(close.reason, /pausing/)
      for (const [what, err] of [['command', await bgEnd], ['pty', await termEnd], ['watcher', await watchEnded]]) {
        assert.ok(err, `${what}: its stream ended without an error`)
        assert.match(err.message, /is pausing/, `${what}: ${err.message}`)
      }

      // After resume the command is still running and a new connection follows its output.
      const again = await Sandbox.connect(id)
      let later = ''
      const follow = await again.commands.connect(bg.pid, { onStdout: (d) => { later += d } })
      await waitFor('output after resume', async () => /tick \d+/.test(later), 10_000, 50)
      await follow.disconnect()

      // A plain request being answered gets the grace: it completes, and the pause waits.
      const slow = rawGet(proxyPort, `/proxy/${id}/8003/`)
      await new Promise((r) => setTimeout(r, 500))
      start = Date.now()
      assert.equal(await Sandbox.pause(id), true)
      const waited = Date.now() - start
      const res = await slow
      assert.equal(res.status, 200)
      assert.equal(res.body, 'slow done')
      assert.ok(waited >= 1000, `pause returned after ${waited} ms, before the request in flight was answered`)
    } finally {
      await Sandbox.kill(id)
    }
  })

  test('timeout kills, or pauses with onTimeout pause; traffic auto-resumes', async () => {
    const { proxyPort } = getEnv()
    const short = await Sandbox.create('base', { timeoutMs: 2_000 })
    // The server must be up before the timeout pauses the sandbox (python starts slowly under
    // QEMU's software emulation), so the 2 s timeout is set once it answers.
    const pausing = await Sandbox.create('base', { timeoutMs: 120_000, lifecycle: { onTimeout: 'pause', autoResume: true } })
    await pausing.commands.run('cd /tmp && echo awake > index.html && python3 -m http.server 8001', { background: true })
    await waitFor('server in the sandbox answers', async () =>
      (await rawGet(proxyPort, '/', { 'E2b-Sandbox-Id': pausing.sandboxId, 'E2b-Sandbox-Port': '8001' })).status === 200, 60_000, 250)
    await pausing.setTimeout(2_000)
    await waitGone('short-lived sandbox killed', short.sandboxId, 20_000)
    await waitFor('sandbox paused on timeout', async () => (await Sandbox.getInfo(pausing.sandboxId)).state === 'paused', 20_000, 250)
    // Traffic to a paused sandbox with autoResume wakes it up.
    const r = await rawGet(proxyPort, '/', { 'E2b-Sandbox-Id': pausing.sandboxId, 'E2b-Sandbox-Port': '8001' })
    assert.equal(r.status, 200)
    assert.equal(r.body, 'awake\n')
    assert.equal((await Sandbox.getInfo(pausing.sandboxId)).state, 'running')
    await Sandbox.kill(pausing.sandboxId)
  })

  test('kill', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 60_000 })
    assert.equal(await Sandbox.kill(sbx.sandboxId), true)
    assert.equal(await Sandbox.kill(sbx.sandboxId), false)
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId), SandboxNotFoundError)
  })

  // E2B's proxy answers 502 {message, sandboxId, code} for a sandbox that is not running, and
  // the SDK reads a 502 on envd's /health as "not running" rather than an error.
  test('isRunning is false after pause, kill and timeout; the proxy answers E2B\'s 502', async () => {
    const { proxyPort } = getEnv()
    const short = await Sandbox.create('base', { timeoutMs: 3_000 })
    const paused = await Sandbox.create('base', { timeoutMs: 120_000 })
    const killed = await Sandbox.create('base', { timeoutMs: 120_000 })
    try {
      assert.equal(await paused.isRunning(), true)
      await paused.pause()
      assert.equal(await paused.isRunning(), false, 'after pause()')
      assert.equal((await Sandbox.getInfo(paused.sandboxId)).state, 'paused', 'isRunning() does not resume it')
      await killed.kill()
      assert.equal(await killed.isRunning(), false, 'after kill()')
      await waitGone('short-lived sandbox killed on timeout', short.sandboxId, 30_000)
      assert.equal(await short.isRunning(), false, 'after the timeout ran out')
      for (const [id, what] of [[killed.sandboxId, 'killed'], [paused.sandboxId, 'paused'], ['nosuchsandbox', 'unknown']]) {
        const r = await rawGet(proxyPort, '/health', { 'E2b-Sandbox-Id': id, 'E2b-Sandbox-Port': '49983' })
        assert.equal(r.status, 502, `${what}: ${r.status} ${r.body}`)
        const body = JSON.parse(r.body)
        assert.deepEqual(Object.keys(body).sort(), ['code', 'message', 'sandboxId'], `${what}: ${r.body}`)
        assert.equal(body.code, 502)
        assert.equal(body.sandboxId, id)
        assert.match(body.message, /^The sandbox was not found/)
      }
    } finally {
      for (const s of [short, paused, killed]) await Sandbox.kill(s.sandboxId).catch(() => {})
    }
  })

  test('a command whose sandbox is killed under it fails with the SDK\'s TimeoutError', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 120_000 })
    let started = false
    const outcome = sbx.commands.run('echo started; sleep 30', { timeoutMs: 60_000, onStdout: () => { started = true } })
      .then((r) => new Error(`the command finished: ${JSON.stringify(r)}`), (e) => e)
    try {
      await waitFor('command started', async () => started, 20_000, 50)
      // Killed from another client: the SDK's own static call, with no link to this stream.
      const t0 = Date.now()
      assert.equal(await Sandbox.kill(sbx.sandboxId), true)
      const err = await outcome
      assert.ok(err instanceof TimeoutError, `want TimeoutError, got ${err?.constructor?.name}: ${err?.message}`)
      assert.match(err.message, /was killed or reached its end of life/)
      assert.ok(Date.now() - t0 < 20_000, 'the command ends when its sandbox is killed, not when sleep does')
    } finally {
      await Sandbox.kill(sbx.sandboxId).catch(() => {})
      await outcome
    }
  })

  test('list startedAfter is inclusive; getMetrics returns the history, only samples inside start..end', async () => {
    const tag = `started-${Date.now()}`
    const sbx = await Sandbox.create('base', { metadata: { suite: tag }, timeoutMs: 120_000 })
    try {
      const { startedAt } = await sbx.getInfo()
      const listed = async (startedAfter) =>
        (await Sandbox.list({ query: { metadata: { suite: tag }, startedAfter } }).nextItems()).map((s) => s.sandboxId)
      assert.deepEqual(await listed(startedAt), [sbx.sandboxId], 'started exactly then')
      assert.deepEqual(await listed(new Date(startedAt.getTime() - 1000)), [sbx.sandboxId], 'a second earlier')
      assert.deepEqual(await listed(new Date(startedAt.getTime() + 1000)), [], 'a second later')

      // The agent samples envd every 5 s and keeps the history: a sandbox running ~12 s has
      // at least two samples, oldest first.
      let all = []
      await waitFor('two metrics samples', async () => (all = await sbx.getMetrics()).length >= 2, 20_000, 1000)
      assert.ok(Date.now() - startedAt.getTime() < 20_000, 'two samples within 20 s of the start')
      for (let i = 1; i < all.length; i++) {
        assert.ok(all[i].timestamp > all[i - 1].timestamp, `samples out of order: ${all.map((m) => m.timestamp.toISOString())}`)
      }
      const end = new Date(Date.now() + 60_000)
      const inside = await sbx.getMetrics({ start: startedAt, end })
      assert.ok(inside.length >= 1, 'a range from the start to past now has a sample')
      for (const m of inside) {
        assert.ok(m.timestamp.getTime() >= Math.floor(startedAt.getTime() / 1000) * 1000 && m.timestamp <= end, `sample at ${m.timestamp.toISOString()} outside the range`)
        assert.ok(m.memTotal > 0 && m.cpuCount > 0, JSON.stringify(m))
      }
      const before = await sbx.getMetrics({ start: new Date(startedAt.getTime() - 3_600_000), end: new Date(startedAt.getTime() - 60_000) })
      assert.deepEqual(before, [], 'a range before the sandbox existed has no samples')
      await assert.rejects(sbx.getMetrics({ start: end, end: startedAt }), /start/, 'start after end is refused')
    } finally {
      await sbx.kill()
    }
  })
}

describe('hearth dev (SQLite)', () => {
  let dev, env, dir
  before(async () => {
    const [api, proxy, arpc, aproxy] = await freePorts(4)
    dir = dataDir('dev')
    dev = track(new Proc('hearth dev', ['dev', '--data-dir', dir, '--api-key', testKey,
      '--listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${proxy}`,
      '--agent-listen', `127.0.0.1:${arpc}`, '--agent-proxy-listen', `127.0.0.1:${aproxy}`,
      '--slot-prefix', 'he2ed', '--pool', '10.233.0.0/16', ...egressResolve]))
    env = { apiPort: api, proxyPort: proxy, storeArgs: ['--data-dir', dir] }
    useEnv(api, proxy)
    await apiReady(`http://127.0.0.1:${api}`, testKey).catch((e) => { console.error(dev.tail()); throw e })
  })
  after(async () => {
    logsNote()
    await dev?.stop()
  })
  platformSuite(() => env)

  test('a template derived with hearth template build --from serves sandboxes', async () => {
    const { apiPort } = env
    execFileSync(hearthBin, ['template', 'build', 'tools', '--from', 'base', '--data-dir', dir,
      '--run', 'echo made-by-template > /opt/marker', '--run', 'chmod 0644 /opt/marker'], { stdio: 'pipe' })
    // The agent announces it with its next heartbeat.
    await waitFor('template announced', async () => {
      const r = await fetch(`http://127.0.0.1:${apiPort}/templates`, { headers: { 'X-API-Key': testKey } })
      return r.ok && (await r.json()).some((t) => t.templateID === 'tools' || (t.aliases || []).includes('tools'))
    }, 30_000, 500)
    const sbx = await Sandbox.create('tools', { timeoutMs: 60_000 })
    try {
      assert.equal((await sbx.commands.run('cat /opt/marker && whoami')).stdout, 'made-by-template\nuser\n')
    } finally {
      await sbx.kill()
    }
  })

  test('wrong API key is refused', async () => {
    await assert.rejects(Sandbox.create('base', { apiKey: 'e2b_' + '0'.repeat(40) }), /401|invalid|unauthori/i)
  })
})

// The same suite on QEMU microVMs (software emulation here: each boot takes seconds).
describe('hearth dev --runtime qemu', { skip: process.env.HEARTH_E2E_QEMU === '0' && 'HEARTH_E2E_QEMU=0' }, () => {
  let dev, env
  before(async () => {
    const [api, proxy, arpc, aproxy] = await freePorts(4)
    const dir = dataDir('devqemu')
    dev = track(new Proc('hearth dev qemu', ['dev', '--runtime', 'qemu', '--data-dir', dir, '--api-key', testKey,
      '--listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${proxy}`,
      '--agent-listen', `127.0.0.1:${arpc}`, '--agent-proxy-listen', `127.0.0.1:${aproxy}`,
      '--slot-prefix', 'he2eq', '--pool', '10.237.0.0/16', ...egressResolve]))
    env = { apiPort: api, proxyPort: proxy, storeArgs: ['--data-dir', dir] }
    useEnv(api, proxy)
    await apiReady(`http://127.0.0.1:${api}`, testKey).catch((e) => { console.error(dev.tail()); throw e })
  })
  after(async () => {
    logsNote()
    await dev?.stop()
  })
  platformSuite(() => env, { canFork: false, quickPause: false })
})

const pgURL = process.env.HEARTH_E2E_DATABASE_URL
describe('hearth server (PostgreSQL) with two agents', { skip: !pgURL && 'HEARTH_E2E_DATABASE_URL not set' }, () => {
  let server, agents = [], env, serverArgs
  const token = 'e2e-agent-token'
  before(async () => {
    const [api, proxy, ...agentPorts] = await freePorts(6)
    serverArgs = ['server', '--database-url', pgURL, '--api-key', testKey, '--agent-token', token,
      '--listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${proxy}`, '--host-dead-after', '15s']
    server = track(new Proc('hearth server', serverArgs))
    env = { apiPort: api, proxyPort: proxy, storeArgs: ['--database-url', pgURL] }
    useEnv(api, proxy)
    await waitFor('server answers', async () => (await fetch(`http://127.0.0.1:${api}/health`)).ok)
    for (const [i, prefix, pool] of [[1, 'he2ea', '10.234.0.0/16'], [2, 'he2eb', '10.235.0.0/16']]) {
      const [rpc, ap] = agentPorts.slice(2 * (i - 1), 2 * i)
      agents.push(track(new Proc(`agent ${i}`, ['agent', '--data-dir', dataDir(`agent${i}`),
        '--listen', `127.0.0.1:${rpc}`, '--proxy-listen', `127.0.0.1:${ap}`, '--host-id', `agent-${i}`,
        '--slot-prefix', prefix, '--pool', pool, '--control-plane', `http://127.0.0.1:${api}`, '--agent-token', token, ...egressResolve])))
    }
    await apiReady(`http://127.0.0.1:${api}`, testKey)
    await waitFor('both agents registered', async () => {
      const r = await fetch(`http://127.0.0.1:${api}/hearth/v1/hosts`, { headers: { 'X-API-Key': testKey } })
      return r.ok && (await r.json()).filter((h) => h.state === 'ready').length === 2
    }, 120_000, 250)
  })
  after(async () => {
    logsNote()
    await server?.stop()
    for (const a of agents) await a.stop()
  })
  platformSuite(() => env)

  test('sandboxes spread across both agents and survive a control plane restart', async () => {
    // Placement reads the agents' heartbeats (every 5 s): wait until both report the earlier
    // tests' sandboxes gone, so a lagging figure cannot tip all four creates onto one agent.
    const hostsNow = async () => (await (await fetch(`${process.env.E2B_API_URL}/hearth/v1/hosts`, { headers: { 'X-API-Key': testKey } })).json())
    await waitFor('both agents ready, heartbeating, with no running sandbox', async () => {
      const hs = await hostsNow()
      return hs.length === 2 && hs.every((h) => h.state === 'ready' && h.sandboxesRunning === 0 && Date.now() - Date.parse(h.lastHeartbeat) < 6000)
    }, 20_000, 250).catch(async (e) => { console.error('hosts:', JSON.stringify(await hostsNow())); throw e })
    const sbxs = []
    for (let i = 0; i < 4; i++) sbxs.push(await Sandbox.create('base', { timeoutMs: 300_000 }))
    try {
      const hosts = new Set()
      for (const s of sbxs) {
        const r = await fetch(`${process.env.E2B_API_URL}/sandboxes/${s.sandboxId}`, { headers: { 'X-API-Key': testKey } })
        hosts.add((await r.json()).clientID)
      }
      if (hosts.size !== 2) console.error('hosts at placement:', JSON.stringify(await hostsNow()))
      assert.equal(hosts.size, 2, `sandboxes placed on ${[...hosts]}`)
      await sbxs[0].files.write('/home/user/before-restart.txt', 'persisted')

      await server.stop()
      server = track(new Proc('hearth server (restarted)', serverArgs))
      await waitFor('server answers again', async () => (await fetch(`${process.env.E2B_API_URL}/health`)).ok)
      for (const s of sbxs) {
        const again = await Sandbox.connect(s.sandboxId)
        const r = await again.commands.run('echo alive')
        assert.equal(r.stdout, 'alive\n')
      }
      assert.equal(await (await Sandbox.connect(sbxs[0].sandboxId)).files.read('/home/user/before-restart.txt'), 'persisted')
    } finally {
      for (const s of sbxs) await Sandbox.kill(s.sandboxId).catch(() => {})
    }
  })

  test('a drained agent takes no sandboxes; an agent that stops answering loses none', async () => {
    const api = process.env.E2B_API_URL
    const hdr = { 'X-API-Key': testKey }
    const hostOf = async (id) => (await (await fetch(`${api}/sandboxes/${id}`, { headers: hdr })).json())
    const hosts = async () => (await (await fetch(`${api}/hearth/v1/hosts`, { headers: hdr })).json())
    const drain = await fetch(`${api}/hearth/v1/hosts/agent-1/drain`, { method: 'POST', headers: hdr })
    assert.equal(drain.status, 200, await drain.text())
    const agent2 = agents[1]
    let alive, paused
    try {
      alive = await Sandbox.create('base', { timeoutMs: 300_000 })
      paused = await Sandbox.create('base', { timeoutMs: 300_000 })
      for (const s of [alive, paused]) assert.equal((await hostOf(s.sandboxId)).clientID, 'agent-2', 'placed on the drained agent')
      await alive.files.write('/home/user/kept.txt', 'kept')
      const sleeper = await alive.commands.run('sleep 600', { background: true })
      await paused.files.write('/home/user/kept.txt', 'kept too')
      assert.equal(await Sandbox.pause(paused.sandboxId), true)

      // The agent stops answering (its sandboxes keep running): after --host-dead-after its
      // running sandbox is lost, its paused one still paused; nothing is deleted.
      agent2.child.kill('SIGSTOP')
      try {
        await waitFor('agent-2 marked down', async () => (await hosts()).find((h) => h.id === 'agent-2')?.state === 'down', 40_000, 500)
        assert.equal((await hostOf(alive.sandboxId)).state, 'lost')
        assert.equal((await hostOf(paused.sandboxId)).state, 'paused')
        assert.equal(await alive.isRunning(), false)
        const lost = await Sandbox.list({ query: { state: ['lost'] } }).nextItems()
        assert.deepEqual(lost.map((s) => s.sandboxId), [alive.sandboxId])
      } finally {
        agent2.child.kill('SIGCONT')
      }
      // Back: the same sandbox runs again, with its files and processes; the paused one resumes.
      await waitFor('lost sandbox running again', async () => (await hostOf(alive.sandboxId)).state === 'running', 30_000, 500)
      const again = await Sandbox.connect(alive.sandboxId)
      assert.equal(await again.files.read('/home/user/kept.txt'), 'kept')
      assert.equal((await again.commands.run(`kill -0 ${sleeper.pid} && echo still`)).stdout, 'still\n')
      const resumed = await Sandbox.connect(paused.sandboxId)
      assert.equal(await resumed.files.read('/home/user/kept.txt'), 'kept too')
    } finally {
      agent2.child.kill('SIGCONT')
      await fetch(`${api}/hearth/v1/hosts/agent-1/undrain`, { method: 'POST', headers: hdr })
      for (const s of [alive, paused]) if (s) await Sandbox.kill(s.sandboxId).catch(() => {})
    }
  })
})
