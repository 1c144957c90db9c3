// Keeps docs/compatibility.md true as the e2b SDK grows: every option of the SDK's options types
// and every method of its client classes, as the published SDK's TypeScript declarations
// (node_modules/e2b/dist/index.d.ts) define them, must have a row in the page's tables. Needs
// no Hearth: it reads two files.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const dts = readFileSync(join(dirname(createRequire(import.meta.url).resolve('e2b')), 'index.d.ts'), 'utf8')
const doc = readFileSync(join(here, '..', 'docs', 'compatibility.md'), 'utf8')

// The options types whose own properties are listed as `Type.option`. Nested object literals
// are listed with their path (`SandboxListOpts.query.metadata`). Inherited properties belong to
// the parent type's rows (ConnectionOpts, FilesystemRequestOpts).
const optionTypes = [
  'ConnectionOpts', 'SandboxOpts', 'SandboxLifecycle', 'SandboxNetworkOpts', 'SandboxConnectOpts',
  'SandboxListOpts', 'SandboxMetricsOpts', 'SandboxPauseOpts', 'SandboxForkOpts', 'SandboxNetworkUpdate',
  'SandboxUrlOpts', 'CreateSnapshotOpts', 'SnapshotListOpts', 'CommandStartOpts', 'PtyCreateOpts',
  'FilesystemRequestOpts', 'FilesystemWriteOpts', 'FilesystemReadOpts', 'FilesystemListOpts', 'WatchOpts',
]
// The classes whose public methods and getters are listed as `Class.method`; SandboxApi's
// static methods are called on Sandbox, so they are listed under Sandbox.
const classes = { Sandbox: 'Sandbox', SandboxApi: 'Sandbox', Commands: 'Commands', CommandHandle: 'CommandHandle', Pty: 'Pty', Filesystem: 'Filesystem', WatchHandle: 'WatchHandle', Git: 'Git' }

// stripComments removes /* … */ and // … comments (the declarations' JSDoc holds braces and
// code samples). The declarations have no string literals containing comment markers, except
// URLs in JSDoc, which go with their comments.
function stripComments(src) {
  return src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:])\/\/.*$/gm, '$1')
}

const source = stripComments(dts)

// body returns the text between the braces of the first `{` at or after index from, matching
// nested braces, or throws.
function body(from, what) {
  const open = source.indexOf('{', from)
  if (open < 0) throw new Error(`${what}: no body`)
  let depth = 0
  for (let i = open; i < source.length; i++) {
    if (source[i] === '{') depth++
    else if (source[i] === '}' && --depth === 0) return source.slice(open + 1, i)
  }
  throw new Error(`${what}: unbalanced braces`)
}

// declaration finds `interface Name`, `type Name =` or `declare class Name` at a line start. The
// body is the first brace pair after it: the heritage clauses (`extends Pick<…>`, `X &`) of
// the declarations read here hold no braces.
function declaration(kind, name) {
  const re = kind === 'class'
    ? new RegExp(`^declare class ${name}\\b`, 'm')
    : new RegExp(`^(interface ${name}\\b|type ${name}\\s*=)`, 'm')
  const m = re.exec(source)
  if (!m) throw new Error(`the SDK declares no ${kind} ${name}: update the lists in compat-doc.test.mjs and docs/compatibility.md`)
  return body(m.index, name)
}

// topLevel splits a body into its top-level members: text at brace depth 0, cut at ';' or at
// a newline, with nested `{…}`, `(…)`, `<…>` and `[…]` kept in the member they belong to.
function topLevel(text) {
  const members = []
  let depth = 0, cur = '', prev = ''
  for (const c of text) {
    if (c === '{' || c === '(' || c === '<' || c === '[') depth++
    // The '>' of an arrow (`() => T`) closes nothing.
    if (c === '}' || c === ')' || (c === '>' && prev !== '=') || c === ']') depth--
    prev = c
    if (depth === 0 && (c === ';' || c === '\n')) {
      if (cur.trim()) members.push(cur.trim())
      cur = ''
      continue
    }
    cur += c
  }
  if (cur.trim()) members.push(cur.trim())
  return members
}

// propertyNames lists a type body's properties (`name?: type`), recursing into object-literal
// types as `name.child`.
function propertyNames(text, prefix = '') {
  const names = []
  for (const m of topLevel(text)) {
    const p = /^(?:readonly\s+)?([A-Za-z_$][\w$]*)\??\s*:\s*([\s\S]*)$/.exec(m)
    if (!p) continue
    names.push(prefix + p[1])
    const type = p[2].trim()
    if (type.startsWith('{')) names.push(...propertyNames(type.slice(1, type.lastIndexOf('}')), `${prefix}${p[1]}.`))
  }
  return names
}

// methodNames lists a class body's public methods and getters, static or not.
function methodNames(text) {
  const names = new Set()
  for (const m of topLevel(text)) {
    if (/^(protected|private)\b/.test(m)) continue
    const p = /^(?:static\s+)?(?:get\s+)?([A-Za-z_$][\w$]*)\s*[(<]/.exec(m)
    if (p && p[1] !== 'constructor') names.add(p[1])
  }
  return [...names]
}

// The rows the page lists: the first cell of every table row, in backticks.
const rows = new Set([...doc.matchAll(/^\|\s*`([^`]+)`/gm)].map((m) => m[1]))

test('the extractor finds what it must (a guard against it silently finding nothing)', () => {
  assert.ok(propertyNames(declaration('type', 'SandboxOpts')).includes('timeoutMs'))
  assert.ok(propertyNames(declaration('type', 'SandboxListOpts')).includes('query.metadata'))
  assert.ok(methodNames(declaration('class', 'Sandbox')).includes('getHost'))
  assert.ok(methodNames(declaration('class', 'SandboxApi')).includes('kill'))
  assert.ok(rows.size > 100, `the page lists only ${rows.size} rows`)
})

for (const t of optionTypes) {
  test(`docs/compatibility.md lists every option of ${t}`, () => {
    const names = propertyNames(declaration('type', t))
    assert.ok(names.length > 0, `${t} has no properties the extractor can see`)
    const missing = names.map((n) => `${t}.${n}`).filter((n) => !rows.has(n))
    assert.deepEqual(missing, [], `add a row (works / ignored / refused (400) / not implemented) for each of these to docs/compatibility.md`)
  })
}

for (const [cls, listedAs] of Object.entries(classes)) {
  test(`docs/compatibility.md lists every method of ${cls}`, () => {
    const names = methodNames(declaration('class', cls))
    assert.ok(names.length > 0, `${cls} has no methods the extractor can see`)
    const missing = names.map((n) => `${listedAs}.${n}`).filter((n) => !rows.has(n))
    assert.deepEqual(missing, [], `add a row for each of these to docs/compatibility.md`)
  })
}
