// The code-interpreter server (bin/codeinterp) driven by the published @e2b/code-interpreter
// SDK. The server runs on the host against Debian's ipykernel; the SDK reaches it through its
// sandboxUrl option (what E2B_SANDBOX_URL sets), exactly the URL and headers it would send
// through Hearth's proxy. A small fake envd serves GET /envs, as a sandbox's envd would.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import http from 'node:http'
import { Sandbox } from '@e2b/code-interpreter'
import { buildCodeInterpreter, defaultCodeinterpBin } from './codeinterp-template.mjs'
import { Proc, freePorts, waitFor, dataDir, apiReady, testKey, hearthBin } from './harness.mjs'

const bin = defaultCodeinterpBin
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
    // E2B's own template runs JavaScript; this one says it has no kernel for it.
    await assert.rejects(sbx.runCode('1', { language: 'js', requestTimeoutMs: 2000 }), /400/)
    const js = await fetch(`${sbx.jupyterUrl}/execute`, { method: 'POST', body: JSON.stringify({ code: '1', language: 'javascript' }) })
    assert.equal(js.status, 400)
    assert.match(await js.text(), /unsupported language "javascript": this code interpreter runs bash, python \(it has no JavaScript or TypeScript kernel\)/)
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

// coreChecks are the checks every code-interpreter-v1 sandbox must pass, whatever its
// options: state between cells, output streaming, errors, a plot with its chart, the
// sandbox's env vars, per-call ones not leaking, and a context of its own.
async function coreChecks(sbx) {
  await sbx.runCode('x = 1')
  assert.equal((await sbx.runCode('x + 1')).text, '2')
  const seen = []
  const out = await sbx.runCode("import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b')", { onStdout: (m) => seen.push([m.line, Date.now()]) })
  assert.deepEqual(out.logs.stdout, ['a\n', 'b\n'])
  assert.ok(seen.length === 2 && seen[1][1] - seen[0][1] >= 700, `stdout did not stream: ${JSON.stringify(seen)}`)
  const err = await sbx.runCode('1/0')
  assert.equal(err.error.name, 'ZeroDivisionError')
  assert.match(err.error.traceback, /ZeroDivisionError/)
  const plot = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()')
  assert.ok(plot.results[0]?.png?.startsWith('iVBORw0KGgo'), JSON.stringify(plot).slice(0, 300))
  assert.equal(plot.results[0].chart?.type, 'line')
  const env = await sbx.runCode("import os; os.getenv('TEST_ENV_VAR')")
  if (env.text !== 'supertest') {
    const r = await sbx.commands.run(`cat /etc/hosts; curl -si -H 'X-Access-Token: ${sbx.envdAccessToken}' http://127.0.0.1:49983/envs; ps aux`, { user: 'root' }).catch((e) => e)
    console.error('envd /envs from inside:', r.stdout, r.stderr)
  }
  assert.equal(env.text, 'supertest')
  assert.equal((await sbx.runCode("import os; os.getenv('FOO')", { envs: { FOO: 'bar' } })).text, 'bar')
  assert.equal((await sbx.runCode("import os; os.getenv('FOO', 'unset')")).text, 'unset')
  const ctx = await sbx.createCodeContext({ cwd: '/tmp' })
  assert.equal((await sbx.runCode('import os; os.getcwd()', { context: ctx })).text, '/tmp')
  assert.ok((await sbx.listCodeContexts()).some((c) => c.id === ctx.id))
  await sbx.removeCodeContext(ctx)
  assert.deepEqual((await sbx.runCode('echo $((6 * 7))', { language: 'bash' })).logs.stdout, ['42\n'])
}

describe('code-interpreter-v1 on hearth dev', { skip: !hearthBin && 'HEARTH_BIN is not set' }, () => {
  let dev, sbx
  before(async () => {
    const [api, proxy, arpc, aproxy] = await freePorts(4)
    const dir = dataDir('devci')
    dev = new Proc('hearth dev codeinterp', ['dev', '--data-dir', dir, '--api-key', testKey,
      '--listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${proxy}`,
      '--agent-listen', `127.0.0.1:${arpc}`, '--agent-proxy-listen', `127.0.0.1:${aproxy}`,
      '--slot-prefix', 'he2ec', '--pool', '10.243.0.0/16'])
    process.env.E2B_API_URL = `http://127.0.0.1:${api}`
    process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxy}`
    process.env.E2B_API_KEY = testKey
    await apiReady(`http://127.0.0.1:${api}`, testKey).catch((e) => { console.error(dev.tail()); throw e })
  })
  after(async () => {
    await sbx?.kill().catch(() => {})
    console.error(`hearth dev log: ${dev?.logFile}`)
    await dev?.stop()
  })

  test('build code-interpreter-v1, then runCode with the default template', async () => {
    console.error(`code-interpreter-v1 built in ${await buildCodeInterpreter(bin)} ms`)

    const createStart = Date.now()
    // (A long timeout: the later tests use this sandbox after several minutes of others.)
    sbx = await Sandbox.create({ envs: { TEST_ENV_VAR: 'supertest' }, timeoutMs: 900_000 }) // the SDK's default template
    const first = Date.now()
    await sbx.runCode('x = 1')
    console.error(`Sandbox.create ${first - createStart} ms, first runCode ${Date.now() - first} ms`)
    await coreChecks(sbx)
    assert.equal((await sbx.runCode('import os; os.getcwd()')).text, '/home/user')
    assert.equal((await sbx.runCode('os.geteuid()')).text, '0') // kernels run as root, as on E2B
  })

  test('a box plot is a box_and_whisker chart (E2B\'s example)', async () => {
    assert.ok(sbx, 'needs the sandbox of the first test')
    const e = await sbx.runCode(`
import matplotlib.pyplot as plt
data = {
    'Class A': [85, 90, 78, 92, 88],
    'Class B': [95, 89, 76, 91, 84, 87],
    'Class C': [75, 82, 88, 79, 86]
}
fig, ax = plt.subplots(figsize=(10, 6))
ax.set_title('Exam Scores Distribution')
ax.set_xlabel('Class')
ax.set_ylabel('Score')
ax.boxplot(data.values(), labels=data.keys(), patch_artist=True)
ax.legend()
plt.tight_layout()
plt.show()
`)
    const chart = e.results[0]?.chart
    assert.ok(chart, JSON.stringify(e).slice(0, 300))
    assert.equal(chart.type, 'box_and_whisker')
    assert.equal(chart.title, 'Exam Scores Distribution')
    assert.deepEqual([chart.x_label, chart.y_label, chart.x_unit, chart.y_unit], ['Class', 'Score', null, null])
    const boxes = chart.elements
    assert.deepEqual(boxes.map((b) => b.label), ['Class A', 'Class B', 'Class C'])
    assert.deepEqual(boxes.map((b) => b.outliers), [[], [76], []])
    assert.deepEqual(boxes.map((b) => b.min), [78, 84, 75])
    assert.deepEqual(boxes.map((b) => b.first_quartile), [85, 84.75, 79])
    assert.deepEqual(boxes.map((b) => b.median), [88, 88, 82])
    assert.deepEqual(boxes.map((b) => b.third_quartile), [90, 90.5, 86])
    assert.deepEqual(boxes.map((b) => b.max), [92, 95, 88])
  })

  test('pause and resume keep the kernels\' state', async () => {
    const s = await Sandbox.create()
    try {
      await s.runCode('x = 41')
      const ctx = await s.createCodeContext({ cwd: '/tmp' })
      await s.runCode('y = 1', { context: ctx })
      await s.runCode('Z=bash', { language: 'bash' })
      const t0 = Date.now()
      assert.equal(await s.pause(), true)
      const back = await Sandbox.connect(s.sandboxId)
      console.error(`pause + connect ${Date.now() - t0} ms`)
      assert.equal((await back.runCode('x + 1')).text, '42')
      assert.equal((await back.runCode('y + 1', { context: ctx })).text, '2')
      assert.deepEqual((await back.runCode('echo $Z', { language: 'bash' })).logs.stdout, ['bash\n'])
      assert.ok((await back.listCodeContexts()).some((c) => c.id === ctx.id))
    } finally {
      await s.kill().catch(() => {})
    }
  })

  test('a fork has the kernels\' state, and its own from then on', async () => {
    const s = await Sandbox.create()
    try {
      await s.runCode('x = 41')
      const t0 = Date.now()
      const [child] = await s.fork()
      if (child instanceof Error) throw child
      console.error(`fork ${Date.now() - t0} ms`)
      try {
        assert.ok(child instanceof Sandbox, 'the fork is a code interpreter Sandbox')
        assert.notEqual(child.sandboxId, s.sandboxId)
        assert.equal((await child.runCode('x + 1')).text, '42')
        await child.runCode('x = 0')
        assert.equal((await s.runCode('x')).text, '41', 'the parent keeps its own state')
        assert.equal((await child.runCode('x')).text, '0')
      } finally {
        await child.kill().catch(() => {})
      }
    } finally {
      await s.kill().catch(() => {})
    }
  })

  test('a secure sandbox without public traffic: the SDK sends the tokens, the core checks pass', async () => {
    const s = await Sandbox.create({ secure: true, network: { allowPublicTraffic: false }, envs: { TEST_ENV_VAR: 'supertest' } })
    try {
      assert.ok(s.trafficAccessToken, 'the create response has a traffic access token')
      await coreChecks(s)
      // Without the token, port 49999 is closed to the world (envd's own port keeps its token).
      const res = await fetch(`${s.jupyterUrl}/contexts`, { headers: { 'E2b-Sandbox-Id': s.sandboxId, 'E2b-Sandbox-Port': '49999' } })
      assert.equal(res.status, 403)
      assert.match(await res.text(), /not public/)
      const ok = await fetch(`${s.jupyterUrl}/contexts`, { headers: { 'E2b-Sandbox-Id': s.sandboxId, 'E2b-Sandbox-Port': '49999', 'E2B-Traffic-Access-Token': s.trafficAccessToken } })
      assert.equal(ok.status, 200)
      // Paused and resumed through connect, the state and the tokens still work.
      await s.runCode('x = 41')
      await s.pause()
      const back = await Sandbox.connect(s.sandboxId)
      assert.equal(back.trafficAccessToken, s.trafficAccessToken)
      assert.equal((await back.runCode('x + 1')).text, '42')
      assert.equal((await back.runCode("import os; os.getenv('TEST_ENV_VAR')")).text, 'supertest')
    } finally {
      await s.kill().catch(() => {})
    }
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
