// The code-interpreter server (bin/codeinterp) driven by the published @e2b/code-interpreter
// SDK. The server runs on the host against Debian's ipykernel; the SDK reaches it through its
// sandboxUrl option (what E2B_SANDBOX_URL sets), exactly the URL and headers it would send
// through Hearth's proxy. A small fake envd serves GET /envs, as a sandbox's envd would.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, copyFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import http from 'node:http'
import { Sandbox } from '@e2b/code-interpreter'
import { Template, waitForURL } from 'e2b'
import { Proc, freePorts, waitFor, dataDir, apiReady, testKey, hearthBin } from './harness.mjs'

const bin = process.env.CODEINTERP_BIN || fileURLToPath(new URL('../bin/codeinterp', import.meta.url))
const token = 'e2e-envd-access-token'

describe('code interpreter server on the host', () => {
  let server, envd, sbx, cwd, output = ''
  before(async () => {
    cwd = mkdtempSync(join(tmpdir(), 'hearth-codeinterp-e2e-'))
    const [port, envdPort] = await freePorts(2)
    envd = http.createServer((req, res) => {
      if (req.url !== '/envs' || req.headers['x-access-token'] !== token) {
        res.writeHead(401).end('missing or wrong X-Access-Token')
        return
      }
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ TEST_ENV_VAR: 'supertest' }))
    })
    await new Promise((r) => envd.listen(envdPort, '127.0.0.1', r))
    server = spawn(bin, ['-addr', `127.0.0.1:${port}`, '-cwd', cwd, '-envd', `http://127.0.0.1:${envdPort}`], { stdio: ['ignore', 'pipe', 'pipe'] })
    server.stdout.on('data', (d) => { output += d })
    server.stderr.on('data', (d) => { output += d })
    const url = `http://127.0.0.1:${port}`
    await waitFor('codeinterp /health', async () => (await fetch(`${url}/health`)).status === 200, 60_000, 200)
    // The object Sandbox.create would return for a secure sandbox; no control plane needed.
    sbx = new Sandbox({ sandboxId: 'codeinterp-host-test', sandboxUrl: url, envdAccessToken: token, envdVersion: '0.6.4', apiKey: 'e2b_' + '0'.repeat(40) })
  })

  after(async () => {
    if (server && server.exitCode === null) {
      const exited = new Promise((r) => server.once('exit', r))
      server.kill('SIGTERM')
      await exited
    }
    envd?.closeAllConnections()
    await new Promise((r) => envd?.close(r))
    if (cwd) rmSync(cwd, { recursive: true, force: true })
  })

  test('codeinterp: state carries over between runCode calls', async () => {
    await sbx.runCode('x = 1')
    const e = await sbx.runCode('x + 1')
    assert.equal(e.text, '2')
    assert.equal(e.error, undefined)
    assert.ok(e.executionCount >= 2)
  })

  test('codeinterp: stdout streams to onStdout while the cell runs', async () => {
    const seen = []
    const start = Date.now()
    const e = await sbx.runCode("import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')", {
      onStdout: (m) => seen.push({ line: m.line, at: Date.now() - start }),
    })
    assert.deepEqual(e.logs.stdout, ['first\n', 'second\n'])
    assert.deepEqual(seen.map((s) => s.line), ['first\n', 'second\n'])
    assert.ok(seen[1].at - seen[0].at >= 1000, `lines ${JSON.stringify(seen)} did not stream`)
  })

  test('codeinterp: an exception is execution.error', async () => {
    let called = 0
    const e = await sbx.runCode('1/0', { onError: () => called++ })
    assert.equal(e.error.name, 'ZeroDivisionError')
    assert.equal(e.error.value, 'division by zero')
    assert.match(e.error.traceback, /ZeroDivisionError/)
    assert.equal(called, 1)
  })

  test('codeinterp: a timed-out cell is interrupted and the context keeps working', async () => {
    await assert.rejects(sbx.runCode('import time\ntime.sleep(300)', { timeoutMs: 2000 }), (err) => err.name === 'TimeoutError')
    const start = Date.now()
    const e = await sbx.runCode('1 + 1', { timeoutMs: 10_000 })
    assert.equal(e.text, '2')
    assert.ok(Date.now() - start < 5000)
  })

  test('codeinterp: env vars per call do not leak; the sandbox ones come from envd', async () => {
    assert.equal((await sbx.runCode("import os; os.getenv('FOO')", { envs: { FOO: 'bar' } })).text, 'bar')
    assert.equal((await sbx.runCode("import os; os.getenv('FOO', 'default')")).text, 'default')
    assert.equal((await sbx.runCode("import os; os.getenv('TEST_ENV_VAR')")).text, 'supertest')
    assert.equal((await sbx.runCode("import os; os.getenv('TEST_ENV_VAR')", { envs: { TEST_ENV_VAR: 'x' } })).text, 'x')
    assert.equal((await sbx.runCode("import os; os.getenv('TEST_ENV_VAR')")).text, 'supertest')
    const b = await sbx.runCode('echo $FOO', { language: 'bash', envs: { FOO: 'bar' } })
    assert.deepEqual(b.logs.stdout, ['bar\n'])
    assert.deepEqual((await sbx.runCode('echo ${FOO:-default}', { language: 'bash' })).logs.stdout, ['default\n'])
  })

  test('codeinterp: contexts: create with cwd, list, restart, remove', async () => {
    const ctx = await sbx.createCodeContext({ cwd: '/tmp', language: 'python' })
    assert.deepEqual({ language: ctx.language, cwd: ctx.cwd }, { language: 'python', cwd: '/tmp' })
    const list = await sbx.listCodeContexts()
    assert.equal(list.at(-1).id, ctx.id)
    assert.ok(list.some((c) => c.language === 'python' && c.cwd === cwd))
    assert.equal((await sbx.runCode('import os; os.getcwd()', { context: ctx })).text, '/tmp')
    await sbx.runCode('x = 1', { context: ctx })
    const other = await sbx.runCode('x', { context: await sbx.createCodeContext() })
    assert.equal(other.error.value, "name 'x' is not defined")
    await sbx.restartCodeContext(ctx)
    const e = await sbx.runCode('x', { context: ctx })
    assert.equal(e.error.name, 'NameError')
    await sbx.removeCodeContext(ctx.id)
    assert.ok(!(await sbx.listCodeContexts()).some((c) => c.id === ctx.id))
    // (A short request timeout: the SDK leaves that timer running when a request fails, which
    // would keep the test process alive for its default 60 s.)
    await assert.rejects(sbx.runCode('1', { context: ctx, requestTimeoutMs: 2000 }), (err) => err.name === 'NotFoundError')
  })

  test('codeinterp: two contexts run at once', async () => {
    const [a, b] = await Promise.all([sbx.createCodeContext(), sbx.createCodeContext()])
    const start = Date.now()
    const r = await Promise.all([a, b].map((context) => sbx.runCode('import time; time.sleep(2); 1', { context })))
    assert.deepEqual(r.map((e) => e.text), ['1', '1'])
    assert.ok(Date.now() - start < 3600, // one after the other: 4 s
      `took ${Date.now() - start} ms`)
  })

  test('codeinterp: an unknown language is a clear error', async () => {
    await assert.rejects(sbx.runCode('1', { language: 'cobol', requestTimeoutMs: 2000 }), /400/)
    const res = await fetch(`${sbx.jupyterUrl}/execute`, { method: 'POST', body: JSON.stringify({ code: '1', language: 'cobol' }) })
    assert.equal(res.status, 400)
    assert.match(await res.text(), /unsupported language "cobol": this code interpreter runs bash, python/)
  })

  test('codeinterp: DataFrames are data, plots are png, bash runs', async () => {
    const df = await sbx.runCode("import pandas as pd\npd.DataFrame({'a': [1, 2, 3]})")
    assert.deepEqual(df.results[0].data, { a: [1, 2, 3] })
    const plot = await sbx.runCode('\n    import matplotlib.pyplot as plt\n    plt.plot([1, 2, 3])\n    plt.show()\n')
    assert.ok(plot.results[0].png?.startsWith('iVBORw0KGgo'), JSON.stringify(plot.results).slice(0, 200))
    assert.ok(plot.results[0].text)
    assert.deepEqual(plot.results[0].extra, {})
    assert.equal(plot.results[0].chart.type, 'line')
    assert.equal(plot.results[0].chart.elements[0].points.length, 3)
    const pwd = await sbx.runCode('pwd', { language: 'bash' })
    assert.deepEqual(pwd.logs.stdout, [cwd + '\n'])
  })
})

// codeInterpreterTemplate is Hearth's code-interpreter-v1 recipe (docs/code-interpreter.md):
// the base template plus Debian's kernel and data packages and the codeinterp binary, whose
// server runs as the start command: it is up, with its python kernel, in the start snapshot
// every sandbox is restored from. The server (and so the kernels) runs as root, as E2B's does,
// through the sandbox's sudo (the start command runs as the default user `user`).
// contextDir must hold the binary as `codeinterp`.
export function codeInterpreterTemplate(contextDir) {
  return Template({ fileContextPath: contextDir })
    .fromTemplate('base')
    .aptInstall(['python3-ipykernel', 'python3-matplotlib', 'python3-pandas', 'python3-numpy', 'python3-pil'], { noInstallRecommends: true })
    .copy('codeinterp', '/usr/local/bin/hearth-codeinterp', { user: 'root', mode: 0o755 })
    .setStartCmd('sudo /usr/local/bin/hearth-codeinterp -supervise', waitForURL('http://localhost:49999/health'))
}

describe('code-interpreter-v1 on hearth dev', { skip: !hearthBin && 'HEARTH_BIN is not set' }, () => {
  let dev, ctxDir, sbx
  before(async () => {
    const [api, proxy, arpc, aproxy, inspect] = await freePorts(5)
    const dir = dataDir('devci')
    dev = new Proc('hearth dev codeinterp', ['dev', '--data-dir', dir, '--api-key', testKey,
      '--listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${proxy}`,
      '--agent-listen', `127.0.0.1:${arpc}`, '--agent-proxy-listen', `127.0.0.1:${aproxy}`, '--egress-inspect-port', String(inspect),
      '--slot-prefix', 'he2ec', '--pool', '10.243.0.0/16'])
    process.env.E2B_API_URL = `http://127.0.0.1:${api}`
    process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxy}`
    process.env.E2B_API_KEY = testKey
    await apiReady(`http://127.0.0.1:${api}`, testKey).catch((e) => { console.error(dev.tail()); throw e })
    ctxDir = mkdtempSync(join(tmpdir(), 'hearth-codeinterp-ctx-'))
    if (!existsSync(bin)) throw new Error(`${bin} missing: run make build`)
    copyFileSync(bin, join(ctxDir, 'codeinterp'))
  })
  after(async () => {
    await sbx?.kill().catch(() => {})
    console.error(`hearth dev log: ${dev?.logFile}`)
    await dev?.stop()
    if (ctxDir) rmSync(ctxDir, { recursive: true, force: true })
  })

  test('build code-interpreter-v1, then runCode with the default template', async () => {
    const logs = []
    const started = Date.now()
    await Template.build(codeInterpreterTemplate(ctxDir), 'code-interpreter-v1', { cpuCount: 2, memoryMB: 1024, onBuildLogs: (l) => logs.push(l.toString()) })
      .catch((e) => { console.error(logs.slice(-40).join('\n')); throw e })
    console.error(`code-interpreter-v1 built in ${Date.now() - started} ms`)

    const createStart = Date.now()
    sbx = await Sandbox.create({ envs: { TEST_ENV_VAR: 'supertest' } }) // the SDK's default template
    const first = Date.now()
    await sbx.runCode('x = 1')
    console.error(`Sandbox.create ${first - createStart} ms, first runCode ${Date.now() - first} ms`)
    assert.equal((await sbx.runCode('x + 1')).text, '2')
    const err = await sbx.runCode('1/0')
    assert.equal(err.error.name, 'ZeroDivisionError')
    const plot = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()')
    assert.ok(plot.results[0]?.png?.startsWith('iVBORw0KGgo'), JSON.stringify(plot).slice(0, 300))
    const env = await sbx.runCode("import os; os.getenv('TEST_ENV_VAR')")
    if (env.text !== 'supertest') {
      const r = await sbx.commands.run(`cat /etc/hosts; curl -si -H 'X-Access-Token: ${sbx.envdAccessToken}' http://127.0.0.1:49983/envs; ps aux`, { user: 'root' }).catch((e) => e)
      console.error('envd /envs from inside:', r.stdout, r.stderr)
    }
    assert.equal(env.text, 'supertest')
    assert.equal((await sbx.runCode('import os; os.getcwd()')).text, '/home/user')
    assert.equal((await sbx.runCode('os.geteuid()')).text, '0') // kernels run as root, as on E2B
  })

  test('the server comes back after it is killed', async () => {
    assert.ok(sbx, 'needs the sandbox of the previous test')
    await sbx.commands.run("pkill -9 -f 'hearth-codeinterp$'", { user: 'root' })
    await waitFor('codeinterp /health after kill -9', async () => {
      const r = await sbx.commands.run('curl -s -o /dev/null -w "%{http_code}" http://0.0.0.0:49999/health', { user: 'root' }).catch((e) => e.result ?? { stdout: '' })
      return r.stdout === '200'
    }, 30_000, 500)
    assert.equal((await sbx.runCode('1 + 1')).text, '2')
  })
})
