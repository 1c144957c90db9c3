// End-to-end tests: the published e2b SDK drives a standalone Hearth envd on loopback.
// Run by `make test` (scripts/e2e.sh), which builds envd and passes its path in ENVD_BIN.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import net from 'node:net'
import { Sandbox, CommandExitError, FileType, FilesystemEventType } from 'e2b'
import { eventsUntilMarker } from './harness.mjs'

const envdBin = process.env.ENVD_BIN
if (!envdBin) throw new Error('ENVD_BIN must point at the envd binary')

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
    s.on('error', reject)
  })
}

// The SDK starts commands as login shells, which on this host would read root's dotfiles (on
// these machines pyenv, whose rehash lock is left behind when a shell is killed mid-start and
// then stalls every login shell for 60 s). envd runs where root's home is an empty directory:
// a private mount namespace (unshare), as sdk/go/hearthtest does.
const emptyHome = mkdtempSync(join(tmpdir(), 'hearth-e2e-home-'))
const cleanHome = ['--mount', '--', '/bin/sh', '-c', 'mount --bind "$1" "$2" && shift 2 && exec "$@"', 'sh', emptyHome, '/root']

// startEnvd runs envd on a free loopback port and waits for /health.
async function startEnvd() {
  const port = await freePort()
  const child = spawn('unshare', [...cleanHome, envdBin, '--addr', `127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'inherit'] })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 10_000
  for (;;) {
    try {
      const r = await fetch(`${url}/health`)
      if (r.status === 204) break
    } catch {}
    if (Date.now() > deadline) throw new Error('envd did not become healthy')
    await new Promise((r) => setTimeout(r, 50))
  }
  return { url, child }
}

let envd, sbx, dir
before(async () => {
  envd = await startEnvd()
  // Debug mode skips the control plane; sandboxUrl points every envd call at our envd.
  sbx = await Sandbox.create({ debug: true, sandboxUrl: envd.url })
  dir = mkdtempSync(join(tmpdir(), 'hearth-e2e-'))
})
after(() => {
  envd?.child.kill('SIGTERM')
  rmSync(emptyHome, { recursive: true, force: true })
  if (dir) rmSync(dir, { recursive: true, force: true })
})

test('commands: run, exit codes, env and cwd', async () => {
  const r = await sbx.commands.run('echo hello; echo oops >&2')
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'hello\n')
  assert.equal(r.stderr, 'oops\n')

  await assert.rejects(sbx.commands.run('echo partial; exit 42'), (err) => {
    assert.ok(err instanceof CommandExitError)
    assert.equal(err.exitCode, 42)
    assert.equal(err.stdout, 'partial\n')
    return true
  })

  const env = await sbx.commands.run('echo "$GREETING $WHO"', { envs: { GREETING: 'hi', WHO: 'there' } })
  assert.equal(env.stdout, 'hi there\n')

  const cwd = await sbx.commands.run('pwd', { cwd: dir })
  assert.equal(cwd.stdout.trim(), dir)

  const chunks = []
  await sbx.commands.run('for i in 1 2 3; do echo line$i; done', { onStdout: (d) => chunks.push(d) })
  assert.equal(chunks.join(''), 'line1\nline2\nline3\n')
})

test('commands: background, list, connect and kill', async () => {
  const marker = join(dir, 'bg-done')
  const handle = await sbx.commands.run(`sleep 1; echo finished; touch ${marker}`, { background: true })
  assert.ok(handle.pid > 0)

  const procs = await sbx.commands.list()
  assert.ok(procs.some((p) => p.pid === handle.pid), 'background process is listed')

  await handle.disconnect()
  const again = await sbx.commands.connect(handle.pid)
  const res = await again.wait()
  assert.equal(res.exitCode, 0)
  assert.match(res.stdout, /finished/)

  const sleeper = await sbx.commands.run('sleep 60', { background: true })
  assert.equal(await sbx.commands.kill(sleeper.pid), true)
  await assert.rejects(sleeper.wait(), (err) => err instanceof CommandExitError)
  assert.equal(await sbx.commands.kill(sleeper.pid), false, 'killing an exited process reports false')
})

test('commands: stdin', async () => {
  const cat = await sbx.commands.run('cat', { background: true, stdin: true })
  await sbx.commands.sendStdin(cat.pid, 'to stdin ')
  await sbx.commands.sendStdin(cat.pid, 'and more')
  await sbx.commands.closeStdin(cat.pid)
  const res = await cat.wait()
  assert.equal(res.stdout, 'to stdin and more')
})

test('files: write, read, list, stat, rename, remove, makeDir', async () => {
  const base = join(dir, 'files')
  assert.equal(await sbx.files.makeDir(base), true)
  assert.equal(await sbx.files.makeDir(base), false, 'makeDir of an existing dir returns false')

  const info = await sbx.files.write(join(base, 'a', 'b', 'hello.txt'), 'hello world')
  assert.equal(info.path, join(base, 'a', 'b', 'hello.txt'))
  assert.equal(await sbx.files.read(join(base, 'a', 'b', 'hello.txt')), 'hello world')

  const bin = randomBytes(4096)
  await sbx.files.write(join(base, 'bin.dat'), bin)
  const back = await sbx.files.read(join(base, 'bin.dat'), { format: 'bytes' })
  assert.deepEqual(Buffer.from(back), bin)

  const entries = await sbx.files.list(base)
  const names = entries.map((e) => e.name).sort()
  assert.deepEqual(names, ['a', 'bin.dat'])
  const a = entries.find((e) => e.name === 'a')
  assert.equal(a.type, FileType.DIR)

  const st = await sbx.files.getInfo(join(base, 'bin.dat'))
  assert.equal(st.size, 4096)
  assert.equal(st.type, FileType.FILE)

  assert.equal(await sbx.files.exists(join(base, 'bin.dat')), true)
  const moved = await sbx.files.rename(join(base, 'bin.dat'), join(base, 'moved.dat'))
  assert.equal(moved.name, 'moved.dat')
  assert.equal(await sbx.files.exists(join(base, 'bin.dat')), false)

  await sbx.files.remove(join(base, 'a'))
  assert.equal(await sbx.files.exists(join(base, 'a')), false)

  await assert.rejects(sbx.files.read(join(base, 'missing.txt')), /not found|no such/i)
})

test('files: 50 MiB round trip', async () => {
  const big = randomBytes(50 << 20)
  const p = join(dir, 'big.bin')
  await sbx.files.write(p, big)
  const back = Buffer.from(await sbx.files.read(p, { format: 'bytes' }))
  assert.equal(back.length, big.length)
  assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(big).digest('hex'))
})

test('files: watchDir reports changes', async () => {
  const wd = join(dir, 'watched')
  await sbx.files.makeDir(wd)
  const events = []
  const watcher = await sbx.files.watchDir(wd, (e) => events.push(e))
  await sbx.files.write(join(wd, 'new.txt'), 'x')
  await sbx.files.remove(join(wd, 'new.txt'))
  const deadline = Date.now() + 5000
  while (Date.now() < deadline && !events.some((e) => e.type === FilesystemEventType.REMOVE)) {
    await new Promise((r) => setTimeout(r, 50))
  }
  await watcher.stop()
  assert.ok(events.some((e) => e.name === 'new.txt' && e.type === FilesystemEventType.CREATE), `create event in ${JSON.stringify(events)}`)
  assert.ok(events.some((e) => e.name === 'new.txt' && e.type === FilesystemEventType.REMOVE), `remove event in ${JSON.stringify(events)}`)
})

// E2B's envd writes uploads in place, so a watcher sees create, chmod, write (chmod, write when
// the file existed); Hearth stages uploads for atomicity and must report the same, never the
// staging file.
test('files: watchDir sees files.write as E2B reports it, recursive watches too', async () => {
  const wd = join(dir, 'watch-write')
  await sbx.files.makeDir(join(wd, 'sub'))
  const { CREATE: c, CHMOD: m, WRITE: w } = FilesystemEventType
  const cases = [
    { name: 'new file', op: () => sbx.files.write(join(wd, 'a.txt'), 'one'), want: [`${c} a.txt`, `${m} a.txt`, `${w} a.txt`] },
    { name: 'overwrite', op: () => sbx.files.write(join(wd, 'a.txt'), 'two'), want: [`${m} a.txt`, `${w} a.txt`] },
    {
      name: 'several files',
      op: () => sbx.files.write([{ path: join(wd, 'b.txt'), data: 'b' }, { path: join(wd, 'a.txt'), data: 'a' }]),
      want: [`${c} b.txt`, `${m} b.txt`, `${w} b.txt`, `${m} a.txt`, `${w} a.txt`],
    },
    {
      name: 'subdirectory, recursive', opts: { recursive: true },
      op: () => sbx.files.write(join(wd, 'sub', 'c.txt'), 'c'),
      want: [`${c} sub/c.txt`, `${m} sub/c.txt`, `${w} sub/c.txt`],
    },
  ]
  for (const tc of cases) {
    const got = await eventsUntilMarker(sbx, wd, tc.opts, tc.op)
    assert.ok(!got.some((e) => e.includes('.upload-')), `${tc.name}: an event names a staging file: ${JSON.stringify(got)}`)
    assert.deepEqual(got, tc.want, tc.name)
  }
  // Writing into directories that do not exist yet: the recursive watch follows them.
  const got = await eventsUntilMarker(sbx, wd, { recursive: true }, () => sbx.files.write(join(wd, 'n1', 'n2', 'd.txt'), 'd'))
  assert.ok(got.includes(`${w} n1/n2/d.txt`), `write event for n1/n2/d.txt in ${JSON.stringify(got)}`)
  assert.ok(!got.some((e) => e.includes('.upload-')), `an event names a staging file: ${JSON.stringify(got)}`)
})

test('pty: create, input, resize, output', async () => {
  let out = ''
  const dec = new TextDecoder()
  const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => { out += dec.decode(d) } })
  const waitFor = async (s) => {
    const deadline = Date.now() + 5000
    while (!out.includes(s)) {
      if (Date.now() > deadline) throw new Error(`pty output lacks ${JSON.stringify(s)}: ${JSON.stringify(out)}`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }
  const enc = new TextEncoder()
  await sbx.pty.sendInput(term.pid, enc.encode('stty size; echo TERM=$TERM\n'))
  await waitFor('24 80')
  await waitFor('TERM=xterm')
  await sbx.pty.resize(term.pid, { cols: 120, rows: 40 })
  await sbx.pty.sendInput(term.pid, enc.encode('stty size\n'))
  await waitFor('40 120')
  await sbx.pty.sendInput(term.pid, enc.encode('exit 0\n'))
  const res = await term.wait()
  assert.equal(res.exitCode, 0)
})

test('signed file URLs: bound to their user and their path', async () => {
  const secured = await startEnvd()
  try {
    const token = randomBytes(16).toString('hex')
    const init = await fetch(`${secured.url}/init`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ accessToken: token }) })
    assert.equal(init.status, 204)
    const ok = new Sandbox({ sandboxId: 'debug_sandbox_id', envdVersion: '0.6.4', envdAccessToken: token, debug: true, sandboxUrl: secured.url })
    const secret = join(dir, 'root-only.txt')
    await ok.files.write(secret, 'root only')
    await ok.commands.run(`chmod 600 ${secret} && chmod 755 ${dir}`)

    // Signed for nobody: nobody's permissions, and a Basic header cannot name someone else.
    const asNobody = await ok.downloadUrl(secret, { user: 'nobody' })
    assert.equal((await fetch(asNobody)).status, 403)
    const basicRoot = { Authorization: `Basic ${Buffer.from('root:').toString('base64')}` }
    const conflicting = await fetch(asNobody, { headers: basicRoot })
    assert.equal(conflicting.status, 401)
    assert.match((await conflicting.json()).message, /signed for user "nobody"/)
    assert.equal((await fetch(await ok.downloadUrl(secret, { user: 'root' }), { headers: basicRoot })).status, 200)

    const expired = await ok.downloadUrl(secret, { user: 'root', useSignatureExpiration: -10 })
    const res = await fetch(expired)
    assert.equal(res.status, 401)
    assert.match((await res.json()).message, /signature is already expired/)

    // Signed without a path: plain file names into the default directory, nothing else.
    const up = await ok.uploadUrl()
    const form = (name) => { const f = new FormData(); f.append('file', new Blob(['x']), name); return f }
    assert.equal((await fetch(up, { method: 'POST', body: form(join(dir, 'escaped.txt')) })).status, 403)
    assert.equal((await fetch(up, { method: 'POST', body: form('../escaped.txt') })).status, 403)
    assert.equal(await ok.files.exists(join(dir, 'escaped.txt')), false)
    const plain = await fetch(up, { method: 'POST', body: form('signed-plain.txt') })
    assert.equal(plain.status, 200)
    assert.equal((await plain.json())[0].name, 'signed-plain.txt')
  } finally {
    secured.child.kill('SIGTERM')
  }
})

test('access token: required when set, signed file URLs work', async () => {
  const secured = await startEnvd()
  try {
    const token = randomBytes(16).toString('hex')
    const init = await fetch(`${secured.url}/init`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ accessToken: token, envVars: { FROM_INIT: 'yes' } }),
    })
    assert.equal(init.status, 204)

    const anon = await Sandbox.create({ debug: true, sandboxUrl: secured.url })
    await assert.rejects(anon.commands.run('true'), /token|unauthenticated|401/i)

    const ok = new Sandbox({ sandboxId: 'debug_sandbox_id', envdVersion: '0.6.4', envdAccessToken: token, debug: true, sandboxUrl: secured.url })
    const r = await ok.commands.run('echo $FROM_INIT')
    assert.equal(r.stdout, 'yes\n')

    const p = join(dir, 'signed.txt')
    const up = await ok.uploadUrl(p)
    const form = new FormData()
    form.append('file', new Blob(['signed upload']), 'signed.txt')
    assert.equal((await fetch(up, { method: 'POST', body: form })).status, 200)
    const down = await fetch(await ok.downloadUrl(p))
    assert.equal(down.status, 200)
    assert.equal(await down.text(), 'signed upload')
    const tampered = (await ok.downloadUrl(p)).replace('signature=v1_', 'signature=v1_x')
    assert.equal((await fetch(tampered)).status, 401)
  } finally {
    secured.child.kill('SIGTERM')
  }
})
