// End-to-end tests of template tags and versions with the published e2b SDK, on `hearth dev`:
// Template.build of name:tag, assignTags / removeTags / getTags, Sandbox.create('name:tag')
// and the bare name (tag default), sandboxes that keep their version (running, and paused
// then resumed) across a rebuild under the same tag, and garbage collection of a version no
// tag or sandbox uses.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { Sandbox, Template } from 'e2b'
import { startDev, waitFor, hearthBin } from './harness.mjs'

if (!hearthBin) throw new Error('HEARTH_BIN must point at the hearth binary')

// version builds a template from base whose /etc/tag-version says what.
function version(what) {
  return Template().fromTemplate('base').runCmd(`echo ${what} > /etc/tag-version`, { user: 'root' })
}

async function versionOf(sbx) {
  return (await sbx.commands.run('cat /etc/tag-version')).stdout.trim()
}

describe('template tags and versions (hearth dev)', () => {
  let dev, dir
  const name = `e2e-tags-${Date.now().toString(36)}`
  const opts = { cpuCount: 1, memoryMB: 512 }
  const built = {}
  before(async () => {
    ;({ dev, dir } = await startDev('hearth dev tags', 'devtags', 'hta', '10.202.0.0/16'))
  })
  after(async () => {
    console.error(`hearth process log: ${dev?.logFile}`)
    await dev?.stop()
  })

  test('build x:v1 and x:v2; getTags; create by tag; the bare name is the default tag', async () => {
    built.v1 = await Template.build(version('one'), `${name}:v1`, opts)
    built.v2 = await Template.build(version('two'), `${name}:v2`, opts)
    assert.equal(built.v1.templateId, built.v2.templateId, 'one template, two builds')
    assert.notEqual(built.v1.buildId, built.v2.buildId)

    const tags = Object.fromEntries((await Template.getTags(name)).map((t) => [t.tag, t.buildId]))
    assert.deepEqual(tags, { v1: built.v1.buildId, v2: built.v2.buildId })
    assert.equal(await Template.exists(`${name}:v1`), true)
    assert.equal(await Template.exists(`${name}:nope`), false)

    // No build asked for the default tag yet: the bare name has nothing to boot.
    await assert.rejects(Sandbox.create(name, { timeoutMs: 60_000 }), /tag "default" of template/)
    const res = await Template.assignTags(`${name}:v1`, ['default', 'stable'])
    assert.equal(res.buildId, built.v1.buildId)
    assert.deepEqual(res.tags.sort(), ['default', 'stable'])

    for (const [ref, want] of [[`${name}:v1`, 'one'], [`${name}:v2`, 'two'], [name, 'one'], [`${name}:stable`, 'one']]) {
      const sbx = await Sandbox.create(ref, { timeoutMs: 60_000 })
      try {
        assert.equal(await versionOf(sbx), want, `create('${ref}')`)
      } finally {
        await sbx.kill()
      }
    }
    await assert.rejects(Sandbox.create(`${name}:nope`, { timeoutMs: 60_000 }), /tag "nope"/)
  })

  test('a running and a paused sandbox keep their version across a rebuild of its tag', async () => {
    const running = await Sandbox.create(`${name}:v1`, { timeoutMs: 300_000 })
    const paused = await Sandbox.create(`${name}:v1`, { timeoutMs: 300_000 })
    try {
      await paused.commands.run('echo kept > /tmp/state')
      await paused.pause()

      built.v1b = await Template.build(version('one-again'), `${name}:v1`, opts)
      const tags = Object.fromEntries((await Template.getTags(name)).map((t) => [t.tag, t.buildId]))
      assert.equal(tags.v1, built.v1b.buildId, 'v1 moved to the rebuild')
      assert.equal(tags.default, built.v1.buildId, 'default stays on the build it was given')

      assert.equal(await versionOf(running), 'one', 'the running sandbox still has its files')
      const resumed = await Sandbox.connect(paused.sandboxId, { timeoutMs: 300_000 })
      assert.equal(await versionOf(resumed), 'one', 'the resumed sandbox booted its own version')
      assert.equal((await resumed.commands.run('cat /tmp/state')).stdout, 'kept\n')

      const fresh = await Sandbox.create(`${name}:v1`, { timeoutMs: 60_000 })
      try {
        assert.equal(await versionOf(fresh), 'one-again')
      } finally {
        await fresh.kill()
      }
    } finally {
      await running.kill().catch(() => {})
      await paused.kill().catch(() => {})
    }
  })

  test('removeTags; a version no tag or sandbox uses is deleted from the agent', async () => {
    await Template.removeTags(name, 'v2')
    const tags = (await Template.getTags(name)).map((t) => t.tag).sort()
    assert.deepEqual(tags, ['default', 'stable', 'v1'])
    await assert.rejects(Sandbox.create(`${name}:v2`, { timeoutMs: 60_000 }), /tag "v2"/)
    await assert.rejects(Template.removeTags(name, 'default'), /default tag cannot be removed/)
    await assert.rejects(Template.assignTags(name, ':invalid-tag'), /Invalid tag/)

    const versions = join(dir, 'templates')
    const v2dir = join(versions, `${built.v2.templateId}-${built.v2.buildId}`)
    const v1dir = join(versions, `${built.v1.templateId}-${built.v1.buildId}`)
    assert.ok(existsSync(v1dir), `version dir ${v1dir} (have ${readdirSync(versions)})`)
    // Collection runs when a tag goes, and every minute; a build is spared for 10 s after
    // it became ready.
    const v2name = `${built.v2.templateId}-${built.v2.buildId}`
    await waitFor('v2 deleted from the agent', () => !existsSync(v2dir) && !readdirSync(versions).some((e) => e.startsWith(`.${v2name}.old-`)), 150_000, 500)
    assert.ok(existsSync(v1dir), 'a tagged version stays')
    assert.ok(existsSync(join(versions, `${built.v1b.templateId}-${built.v1b.buildId}`)), 'the rebuild stays')
  })
})
