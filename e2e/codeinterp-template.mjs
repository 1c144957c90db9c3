// Hearth's code-interpreter-v1 template, built with E2B's Template SDK through Hearth's API
// (E2B_API_URL, E2B_API_KEY). The e2e suite imports it; `make bench` runs this file to build
// the template before measuring runCode:
//
//   E2B_API_URL=http://127.0.0.1:3000 E2B_API_KEY=... CODEINTERP_BIN=bin/codeinterp node e2e/codeinterp-template.mjs
import { mkdtempSync, rmSync, copyFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Template, waitForURL } from 'e2b'

export const defaultCodeinterpBin = process.env.CODEINTERP_BIN || fileURLToPath(new URL('../bin/codeinterp', import.meta.url))

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

// buildCodeInterpreter builds code-interpreter-v1 from the codeinterp binary at bin and
// returns how long it took; on failure the error carries the build's last log lines.
export async function buildCodeInterpreter(bin = defaultCodeinterpBin) {
  if (!existsSync(bin)) throw new Error(`${bin} missing: run make build`)
  const ctxDir = mkdtempSync(join(tmpdir(), 'hearth-codeinterp-ctx-'))
  const logs = []
  const started = Date.now()
  try {
    copyFileSync(bin, join(ctxDir, 'codeinterp'))
    await Template.build(codeInterpreterTemplate(ctxDir), 'code-interpreter-v1', { cpuCount: 2, memoryMB: 1024, onBuildLogs: (l) => logs.push(l.toString()) })
      .catch((e) => { throw new Error(`build code-interpreter-v1: ${e.message}\n${logs.slice(-40).join('\n')}`) })
    return Date.now() - started
  } finally {
    rmSync(ctxDir, { recursive: true, force: true })
  }
}

if (process.argv[1] && pathToFileURL(resolve(process.argv[1])).href === import.meta.url) {
  buildCodeInterpreter().then(
    (ms) => console.error(`code-interpreter-v1 built in ${ms} ms`),
    (e) => { console.error(e.message); process.exit(1) })
}
