// End-to-end tests of template builds through the API with the published e2b SDK's
// Template builder (build system v2), on `hearth dev`: build, COPY uploads, env, workdir,
// a start command whose server is up the moment Sandbox.create returns (start snapshot),
// failing steps and unsupported bases.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, mkdirSync, writeFileSync, symlinkSync, chmodSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Sandbox, Template, BuildError, waitForPort } from 'e2b'
import { Proc, freePorts, dataDir, apiReady, rawGet, testKey, hearthBin } from './harness.mjs'

if (!hearthBin) throw new Error('HEARTH_BIN must point at the hearth binary')

// firstOK polls port 8000 of sandbox id through the proxy until it answers 200, and returns
// the milliseconds it took and the body.
async function firstOK(proxyPort, id, path, timeoutMs = 60_000) {
  const start = Date.now()
  let tries = 0
  for (;;) {
    tries++
    try {
      const r = await rawGet(proxyPort, path, { 'E2b-Sandbox-Id': id, 'E2b-Sandbox-Port': '8000' })
      if (r.status === 200) return { ms: Date.now() - start, body: r.body, tries }
    } catch {}
    if (Date.now() - start > timeoutMs) throw new Error(`no 200 from port 8000 of ${id} within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('template builds through the API (hearth dev)', () => {
  let dev, proxyPort, ctxDir
  const procs = []
  const alias = `e2e-web-${Date.now().toString(36)}`
  before(async () => {
    const [api, proxy, arpc, aproxy] = await freePorts(4)
    const dir = dataDir('devtmpl')
    dev = new Proc('hearth dev templates', ['dev', '--data-dir', dir, '--api-key', testKey,
      '--listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${proxy}`,
      '--agent-listen', `127.0.0.1:${arpc}`, '--agent-proxy-listen', `127.0.0.1:${aproxy}`,
      '--slot-prefix', 'he2ep', '--pool', '10.242.0.0/16'])
    procs.push(dev)
    proxyPort = proxy
    process.env.E2B_API_URL = `http://127.0.0.1:${api}`
    process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxy}`
    process.env.E2B_API_KEY = testKey
    await apiReady(`http://127.0.0.1:${api}`, testKey).catch((e) => { console.error(dev.tail()); throw e })

    // The build context: a file, a relative symlink to it, an executable and a dangling link.
    ctxDir = mkdtempSync(join(tmpdir(), 'hearth-tmpl-ctx-'))
    mkdirSync(join(ctxDir, 'folder'))
    writeFileSync(join(ctxDir, 'folder', 'test.txt'), 'This is a test file.')
    symlinkSync('test.txt', join(ctxDir, 'folder', 'link.txt'))
    symlinkSync('nothing-here', join(ctxDir, 'folder', 'dangling.txt'))
    writeFileSync(join(ctxDir, 'folder', 'run.sh'), '#!/bin/sh\necho ran\n')
    chmodSync(join(ctxDir, 'folder', 'run.sh'), 0o755)
  })
  after(async () => {
    console.error(`hearth process logs: ${procs.map((p) => p.logFile).join(' ')}`)
    await dev?.stop()
    if (ctxDir) rmSync(ctxDir, { recursive: true, force: true })
  })

  test('Template.exists: base yes, a random name no', async () => {
    assert.equal(await Template.exists('base'), true)
    assert.equal(await Template.exists(`nope-${Date.now()}`), false)
  })

  test('build with runCmd, copy, setEnvs, setWorkdir and a start command; the server answers at once', async () => {
    const logs = []
    const t = Template({ fileContextPath: ctxDir })
      .fromTemplate('base')
      .aptInstall(['iproute2']) // waitForPort uses ss
      .runCmd('echo "built as $(whoami)" > /tmp/run-marker')
      .copy('folder/*', 'folder')
      .setEnvs({ GREETING: 'hello', APP_MODE: 'e2e' })
      .setWorkdir('/app')
      .runCmd('cp -a ~/folder/. /app/ && echo "<h1>$GREETING</h1>" > /app/index.html')
      .setStartCmd('python3 -m http.server 8000', waitForPort(8000))
    const info = await Template.build(t, alias, { cpuCount: 1, memoryMB: 512, onBuildLogs: (l) => logs.push(l.toString()) })
    assert.ok(info.templateId && info.buildId, JSON.stringify(info))
    const all = logs.join('\n')
    assert.match(all, /\[builder 3\/6\] COPY folder\/\* folder/)
    assert.match(all, /Template is ready/)

    const status = await Template.getBuildStatus({ templateId: info.templateId, buildId: info.buildId })
    assert.equal(status.status, 'ready')
    assert.equal(await Template.exists(alias), true)

    const created = Date.now()
    const sbx = await Sandbox.create(alias, { timeoutMs: 120_000 })
    try {
      const createMs = Date.now() - created
      const ok = await firstOK(proxyPort, sbx.sandboxId, '/index.html')
      console.error(`start snapshot: create ${createMs} ms, then first HTTP 200 after ${ok.ms} ms (${ok.tries} tries); create → 200 ${createMs + ok.ms} ms`)
      assert.equal(ok.tries, 1, 'the server answers on the first request after create returns')
      assert.equal(ok.body.trim(), '<h1>hello</h1>')
      assert.equal((await firstOK(proxyPort, sbx.sandboxId, '/test.txt')).body, 'This is a test file.')

      const r = await sbx.commands.run('echo "$GREETING $APP_MODE" && pwd && whoami && cat /tmp/run-marker && readlink /app/link.txt && cat /app/link.txt && echo && /app/run.sh && stat -c "%a %U" /app/run.sh /home/user/folder/test.txt && readlink /home/user/folder/dangling.txt')
      assert.equal(r.stdout, 'hello e2e\n/app\nuser\nbuilt as user\ntest.txt\nThis is a test file.\nran\n755 user\n644 user\nnothing-here\n')
    } finally {
      await sbx.kill()
    }
  })

  test('figure: create → first HTTP 200 without a start snapshot (server started after create)', async () => {
    const created = Date.now()
    const sbx = await Sandbox.create('base', { timeoutMs: 60_000 })
    try {
      const createMs = Date.now() - created
      await sbx.commands.run('cd /tmp && echo ok > index.html && python3 -m http.server 8000', { background: true })
      const ok = await firstOK(proxyPort, sbx.sandboxId, '/index.html')
      console.error(`no start snapshot: create ${createMs} ms, server started then; create → 200 ${Date.now() - created} ms`)
      assert.equal(ok.body, 'ok\n')
    } finally {
      await sbx.kill()
    }
  })

  test('buildInBackground reports building at once, then ready', async () => {
    const t = Template().fromTemplate('base').runCmd('sleep 2')
    const info = await Template.buildInBackground(t, `${alias}-bg`, { cpuCount: 1, memoryMB: 512 })
    const first = await Template.getBuildStatus(info)
    assert.equal(first.status, 'building')
    let st = first
    for (let i = 0; i < 600 && st.status === 'building'; i++) {
      await new Promise((r) => setTimeout(r, 200))
      st = await Template.getBuildStatus(info)
    }
    assert.equal(st.status, 'ready', JSON.stringify(st))
  })

  test('a failing step reports its index and keeps the previous good build', async () => {
    const t = Template().fromTemplate('base').runCmd('true').runCmd('echo failing-now; exit 7')
    // The SDK's older form, Template.build(t, { alias }), is the same flow.
    await assert.rejects(Template.build(t, { alias, cpuCount: 1, memoryMB: 512 }), (e) => {
      assert.ok(e instanceof BuildError, `got ${e?.constructor?.name}: ${e?.message}`)
      assert.match(e.message, /failed to run command 'echo failing-now; exit 7': exit status 7/)
      return true
    })
    // The earlier build still serves sandboxes, server and all.
    const sbx = await Sandbox.create(alias, { timeoutMs: 60_000 })
    try {
      assert.equal((await firstOK(proxyPort, sbx.sandboxId, '/test.txt')).body, 'This is a test file.')
    } finally {
      await sbx.kill()
    }
  })

  test('step index in the status reason; unknown user message as E2B', async () => {
    const t = Template().fromTemplate('base').runCmd('true').runCmd('whoami', { user: 'root123' })
    const info = await Template.buildInBackground(t, `${alias}-fail`, { cpuCount: 1, memoryMB: 512 })
    let st
    for (let i = 0; i < 600; i++) {
      st = await Template.getBuildStatus(info)
      if (st.status !== 'building' && st.status !== 'waiting') break
      await new Promise((r) => setTimeout(r, 200))
    }
    assert.equal(st.status, 'error')
    assert.equal(st.reason.step, '2')
    assert.equal(st.reason.message, "failed to run command 'whoami': command failed: unauthenticated: invalid username: 'root123'")
  })

  test('unknown or unsupported bases are clear errors', async () => {
    await assert.rejects(Template.build(Template().fromTemplate('no-such-template').runCmd('true'), `${alias}-nobase`),
      /base template "no-such-template" not found/)
    // An image is pulled by the agent (images.test.mjs); a registry nobody serves is an error.
    await assert.rejects(Template.build(Template().fromImage('127.0.0.1:1/none/such:1').runCmd('true'), `${alias}-noregistry`),
      /pull 127\.0\.0\.1:1\/none\/such:1 from registry 127\.0\.0\.1:1: .*connection refused/)
  })
})
