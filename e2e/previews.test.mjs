// End-to-end tests of path-form port previews (/proxy/ID/PORT/) in a real browser, on
// `hearth dev` with gVisor: Jupyter Notebook runs a cell (its root-relative assets and API
// calls routed by Referer, its kernel WebSocket by the preview cookie), a Vite dev page
// connects its HMR socket and takes a hot update, and `python3 -m http.server` lists a
// directory. The apps come from one derived template built with the E2B Template SDK.
//
// The browser is Debian's headless chromium driven over the DevTools protocol (cdp.mjs), from
// Node like every other suite here, so the template build, the SDK and the browser share one
// `hearth dev`. With HEARTH_UPDATE_SCREENSHOTS=1 the screenshots replace docs/dashboard/preview-*.png.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Sandbox, Template } from 'e2b'
import { Proc, freePorts, dataDir, apiReady, rawGet, waitFor, testKey, hearthBin } from './harness.mjs'
import { launchChromium } from './cdp.mjs'

if (!hearthBin) throw new Error('HEARTH_BIN must point at the hearth binary')

const repoRoot = fileURLToPath(new URL('..', import.meta.url))

// The apps' template: Debian's Jupyter Notebook and Node.js, and Vite from npm. npm trusts
// the host's certificate authorities (copied in from the build context): where the host
// reaches the internet through a TLS-intercepting proxy it trusts, as on some CI machines, so
// does the build; elsewhere the bundle is Debian's public one.
function previewsTemplate(contextDir) {
  return Template({ fileContextPath: contextDir })
    .fromTemplate('base')
    .aptInstall(['jupyter-notebook', 'nodejs', 'npm'], { noInstallRecommends: true })
    .copy('host-ca.crt', '/tmp/host-ca.crt')
    .runCmd('mkdir -p /home/user/vite-app && cd /home/user/vite-app && npm init -y >/dev/null && ' +
      'npm install --cafile=/tmp/host-ca.crt --no-audit --no-fund --loglevel=error vite@5')
}

const viteIndex = `<!doctype html>
<html><head><meta charset="utf-8"><title>Vite under /proxy</title></head>
<body style="font: 16px sans-serif; margin: 2em"><h1>Vite dev server</h1><p id="out">not loaded</p>
<script type="module" src="/main.js"></script></body></html>
`
const viteMain = (version) => `document.getElementById('out').textContent = 'main.js version ${version}'
if (import.meta.hot) import.meta.hot.accept()
`

const notebook = JSON.stringify({
  cells: [{ cell_type: 'code', execution_count: null, id: 'c1', metadata: {}, outputs: [], source: ['print(6*7)'] }],
  metadata: { kernelspec: { display_name: 'Python 3', language: 'python', name: 'python3' } },
  nbformat: 4,
  nbformat_minor: 5,
})

describe('path-form previews of real web apps in Chromium (hearth dev)', () => {
  let dev, proxyPort, sbx, browser, page, shots, ctxDir
  const procs = []
  const alias = `e2e-previews-${Date.now().toString(36)}`
  before(async () => {
    const [api, proxy, arpc, aproxy] = await freePorts(4)
    const dir = dataDir('devprev')
    dev = new Proc('hearth dev previews', ['dev', '--data-dir', dir, '--api-key', testKey,
      '--listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${proxy}`,
      '--agent-listen', `127.0.0.1:${arpc}`, '--agent-proxy-listen', `127.0.0.1:${aproxy}`,
      '--slot-prefix', 'he2ew', '--pool', '10.249.0.0/16'])
    procs.push(dev)
    proxyPort = proxy
    process.env.E2B_API_URL = `http://127.0.0.1:${api}`
    process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxy}`
    process.env.E2B_API_KEY = testKey
    await apiReady(`http://127.0.0.1:${api}`, testKey).catch((e) => { console.error(dev.tail()); throw e })

    ctxDir = mkdtempSync(join(tmpdir(), 'hearth-previews-ctx-'))
    copyFileSync('/etc/ssl/certs/ca-certificates.crt', join(ctxDir, 'host-ca.crt'))
    const built = Date.now()
    const logs = []
    await Template.build(previewsTemplate(ctxDir), alias, { cpuCount: 2, memoryMB: 1024, onBuildLogs: (l) => logs.push(l.toString()) })
      .catch((e) => { console.error(logs.slice(-40).join('\n')); throw e })
    console.error(`previews template (jupyter-notebook, nodejs, npm, vite@5) built in ${Math.round((Date.now() - built) / 1000)} s`)
    sbx = await Sandbox.create(alias, { timeoutMs: 600_000 })

    shots = process.env.HEARTH_UPDATE_SCREENSHOTS ? join(repoRoot, 'docs', 'dashboard') : mkdtempSync(join(tmpdir(), 'hearth-preview-shots-'))
    browser = await launchChromium()
    page = browser.page
  })
  after(async () => {
    console.error(`hearth process logs: ${procs.map((p) => p.logFile).join(' ')}`)
    await browser?.close()
    await sbx?.kill().catch(() => {})
    await dev?.stop()
    if (shots && !process.env.HEARTH_UPDATE_SCREENSHOTS) rmSync(shots, { recursive: true, force: true })
    if (ctxDir) rmSync(ctxDir, { recursive: true, force: true })
  })

  const base = (port) => `http://127.0.0.1:${proxyPort}/proxy/${sbx.sandboxId}/${port}`
  // serving waits until a server in the sandbox answers path on port through the path form.
  const serving = (port, path) => waitFor(`port ${port} serving ${path}`, async () => {
    const r = await rawGet(proxyPort, `/proxy/${sbx.sandboxId}/${port}${path}`)
    return r.status === 200
  }, 120_000, 250)
  // refused lists the proxy's refusals the browser got: 400 (what requests that left the prefix got
  // before) and 5xx. An app's own 404s (Jupyter asks for optional files) are its business.
  const refused = () => page.responses.filter((r) => r.url.startsWith(`http://127.0.0.1:${proxyPort}/`) && (r.status === 400 || r.status >= 500))

  test('python3 -m http.server: a listing, a subdirectory link and a directory redirect', async () => {
    await sbx.files.write('/home/user/site/hello.txt', 'hello from the sandbox\n')
    await sbx.files.write('/home/user/site/sub/inner.txt', 'inner\n')
    await sbx.commands.run('cd /home/user/site && python3 -m http.server 8000', { background: true })
    await serving(8000, '/')
    await page.navigate(`${base(8000)}/`)
    await page.waitFor('the listing', `document.title.startsWith('Directory listing for /') && !!document.querySelector('a[href="hello.txt"]')`)
    await page.evaluate(`document.querySelector('a[href="sub/"]').click()`)
    await page.waitFor('the subdirectory listing', `location.pathname === '/proxy/${sbx.sandboxId}/8000/sub/' && !!document.querySelector('a[href="inner.txt"]')`)
    // http.server redirects /sub to /sub/: the proxy keeps the redirect in the prefix.
    await page.navigate(`${base(8000)}/sub`)
    await page.waitFor('the redirect into the prefix', `location.pathname === '/proxy/${sbx.sandboxId}/8000/sub/' && !!document.querySelector('a[href="inner.txt"]')`)
    assert.deepEqual(refused(), [])
  })

  test('Jupyter Notebook: the page loads, its kernel WebSocket connects and a cell prints 42', async () => {
    await sbx.files.write('/home/user/e2e.ipynb', notebook)
    await sbx.commands.run("jupyter notebook --ip 0.0.0.0 --port 8888 --no-browser --NotebookApp.token='' --NotebookApp.password='' --notebook-dir=/home/user > /tmp/jupyter.log 2>&1", { background: true })
    await serving(8888, '/api')
    const opened = Date.now()
    await page.navigate(`${base(8888)}/notebooks/e2e.ipynb`)
    await page.waitFor('the kernel to connect', `window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel && Jupyter.notebook.kernel.is_connected()`, 120_000)
    console.error(`jupyter: page opened to kernel connected in ${Date.now() - opened} ms`)
    await page.evaluate('Jupyter.notebook.select(0); Jupyter.notebook.execute_cell_and_select_below(); true')
    await page.waitFor('the output 42', `[...document.querySelectorAll('.output_area pre')].some((p) => p.textContent.trim() === '42')`, 60_000)
    await page.screenshot(join(shots, 'preview-jupyter.png'))

    // The page's own API calls and assets left the prefix and still arrived (routed by the
    // Referer and the cookie); the kernel socket left it too and was upgraded.
    const origin = `http://127.0.0.1:${proxyPort}`
    assert.ok(page.responses.some((r) => r.url.startsWith(`${origin}/static/`) && r.status === 200), 'root-relative /static/ assets loaded')
    assert.ok(page.responses.some((r) => r.url.startsWith(`${origin}/api/`) && r.status < 300), 'root-relative /api/ calls answered')
    const kernelSockets = [...page.webSockets.values()].filter((w) => /\/api\/kernels\/[^/]+\/channels/.test(w.url))
    assert.ok(kernelSockets.length > 0, `a kernel WebSocket was opened: ${JSON.stringify([...page.webSockets.values()])}`)
    for (const ws of kernelSockets) {
      assert.ok(ws.url.startsWith(`ws://127.0.0.1:${proxyPort}/api/kernels/`), `the kernel socket left the prefix: ${ws.url}`)
      assert.equal(ws.status, 101, `kernel socket ${ws.url} upgraded`)
    }
    assert.deepEqual(refused(), [])
  })

  test('Vite dev server: modules load, the HMR WebSocket connects and an edit is hot-updated', async () => {
    await sbx.files.write('/home/user/vite-app/index.html', viteIndex)
    await sbx.files.write('/home/user/vite-app/main.js', viteMain(1))
    await sbx.commands.run('cd /home/user/vite-app && npx vite --host 0.0.0.0 --port 5173 --strictPort > /tmp/vite.log 2>&1', { background: true })
    await serving(5173, '/')
    await page.navigate(`${base(5173)}/`)
    await page.waitFor('main.js to run', `document.getElementById('out').textContent === 'main.js version 1'`)
    await waitFor('the vite client to say it connected', async () => page.console.includes('[vite] connected.'), 30_000, 100)
    const hmr = [...page.webSockets.values()].filter((w) => w.url.startsWith(`ws://127.0.0.1:${proxyPort}/`))
    assert.ok(hmr.some((w) => w.status === 101), `the HMR socket upgraded: ${JSON.stringify(hmr)}`)
    await page.evaluate('window.beforeEdit = true')
    await sbx.files.write('/home/user/vite-app/main.js', viteMain(2))
    await page.waitFor('the hot update', `document.getElementById('out').textContent === 'main.js version 2'`, 30_000)
    assert.equal(await page.evaluate('window.beforeEdit === true'), true, 'updated in place, not reloaded')
    assert.ok(page.console.some((m) => m.includes('[vite] hot updated: /main.js')), page.console.join('\n'))
    await page.screenshot(join(shots, 'preview-vite.png'))
    assert.deepEqual(refused(), [])
  })
})
