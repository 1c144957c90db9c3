// End-to-end tests of what E2B's base template gives a sandbox user, with the published e2b
// SDK against `hearth dev` on gVisor and on QEMU: a sudo that works (envd's, see
// internal/envd/sudo), and Python's pip and venv and Node.js's npm.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox, CommandExitError } from 'e2b'
import { Proc, freePorts, dataDir, apiReady, testKey, waitFor, hearthBin } from './harness.mjs'

if (!hearthBin) throw new Error('HEARTH_BIN must point at the hearth binary')

function useEnv(apiPort, proxyPort) {
  process.env.E2B_API_URL = `http://127.0.0.1:${apiPort}`
  process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxyPort}`
  process.env.E2B_API_KEY = testKey
}

// exitCodeOf runs cmd and returns its exit code (the SDK throws CommandExitError for any but 0).
async function exitCodeOf(sbx, cmd, opts = {}) {
  try {
    return (await sbx.commands.run(cmd, opts)).exitCode
  } catch (e) {
    if (e instanceof CommandExitError) return e.exitCode
    throw e
  }
}

// slow: the runtime emulates its CPU (QEMU without KVM here), so package managers take longer.
function edgeSuite({ slow = false } = {}) {
  const long = { timeoutMs: slow ? 300_000 : 60_000 }

  test('sudo runs commands as root for the default user, like E2B', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 180_000 })
    try {
      assert.equal((await sbx.commands.run('whoami')).stdout, 'user\n')
      assert.equal((await sbx.commands.run('sudo whoami')).stdout, 'root\n')
      assert.equal((await sbx.commands.run('sudo -n id -u')).stdout, '0\n')
      assert.equal((await sbx.commands.run('sudo -u user whoami')).stdout, 'user\n')
      assert.equal((await sbx.commands.run('sudo -- whoami')).stdout, 'root\n')
      assert.equal((await sbx.commands.run('sudo -i pwd')).stdout, '/root\n')
      assert.equal((await sbx.commands.run('cd /tmp && sudo pwd')).stdout, '/tmp\n')
      // Root really is root: it writes where the user may not.
      await sbx.commands.run('sudo sh -c "echo written > /etc/hearth-sudo-test"')
      assert.equal((await sbx.commands.run('stat -c %U /etc/hearth-sudo-test && cat /etc/hearth-sudo-test')).stdout, 'root\nwritten\n')
      // Exit codes pass through, and stdin reaches the command.
      assert.equal(await exitCodeOf(sbx, 'sudo sh -c "exit 7"'), 7)
      assert.equal((await sbx.commands.run('echo piped | sudo cat')).stdout, 'piped\n')
      assert.equal(await exitCodeOf(sbx, 'sudo no-such-command-anywhere'), 1)
      // Only root and group sudo may: envd asks the kernel who is calling (SO_PEERCRED).
      await sbx.commands.run('useradd --no-create-home outsider', { user: 'root' })
      const refused = await sbx.commands.run('sudo -u outsider sudo id -u 2>&1; echo "exit $?"')
      assert.equal(refused.stdout, 'sudo: outsider may not use sudo: only root and members of group "sudo" may (as root: usermod -aG sudo outsider)\nexit 1\n')
      // The socket is in a directory only root can write, inside the sandbox.
      assert.equal((await sbx.commands.run('stat -c "%U %a" /run/envd')).stdout, 'root 755\n')
    } finally {
      await sbx.kill()
    }
  })

  test('sudo keeps the environment only with -E; scoped envs stay with their command', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 180_000, envs: { FROM_CREATE: 'sandbox-wide' } })
    try {
      const show = `sh -c 'echo "\${KEEP:-unset} \${FROM_CREATE:-unset} $HOME $SUDO_USER"'`
      assert.equal((await sbx.commands.run(`sudo ${show}`, { envs: { KEEP: 'kept' } })).stdout, 'unset sandbox-wide /root user\n')
      assert.equal((await sbx.commands.run(`sudo -E ${show}`, { envs: { KEEP: 'kept' } })).stdout, 'kept sandbox-wide /home/user user\n')
      // A command's envs are its own: the next command, sudo or not, never sees them.
      await sbx.commands.run('true', { envs: { SCOPED_SECRET: 's3cr3t' } })
      await sbx.commands.run('sudo true', { envs: { SCOPED_SECRET: 's3cr3t' } })
      await sbx.commands.run('sudo -E true', { envs: { SCOPED_SECRET: 's3cr3t' } })
      for (const cmd of ['env', 'sudo env', 'sudo -E env', 'sudo -i env']) {
        const out = (await sbx.commands.run(cmd)).stdout
        assert.ok(!out.includes('SCOPED_SECRET'), `${cmd} sees another command's scoped env:\n${out}`)
      }
    } finally {
      await sbx.kill()
    }
  })

  test('killing a command kills what it runs under sudo', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 180_000 })
    try {
      const h = await sbx.commands.run('sudo sleep 987', { background: true })
      await waitFor('sleep runs as root', async () => (await sbx.commands.run('ps -o user= -C sleep || true')).stdout.includes('root'), 20_000, 250)
      await h.kill()
      await waitFor('root sleep gone', async () => (await sbx.commands.run('ps -o args= -C sleep || true')).stdout.trim() === '', 20_000, 250)
      // A SIGTERM to sudo reaches the command, whose exit code is sudo's.
      const t = await sbx.commands.run(`sudo sh -c 'trap "exit 42" TERM; touch /tmp/trapped; while :; do sleep 0.1; done' & pid=$!; ` +
        'while [ ! -e /tmp/trapped ]; do sleep 0.1; done; kill -TERM $pid; wait $pid; echo "sudo exited $?"', long)
      assert.equal(t.stdout, 'sudo exited 42\n')
    } finally {
      await sbx.kill()
    }
  })

  test('sudo works after pause and resume', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 180_000 })
    try {
      assert.equal((await sbx.commands.run('sudo whoami')).stdout, 'root\n')
      assert.equal(await Sandbox.pause(sbx.sandboxId), true)
      const again = await Sandbox.connect(sbx.sandboxId)
      assert.equal((await again.commands.run('sudo whoami')).stdout, 'root\n')
    } finally {
      await sbx.kill()
    }
  })

  test('python3 has pip and venv, Node.js has npm; local packages install offline', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 300_000 })
    try {
      assert.match((await sbx.commands.run('pip --version && pip3 --version')).stdout, /^pip \d+.*python 3\.\d+\)\npip \d+/)
      assert.match((await sbx.commands.run('node -e "console.log(process.version, 6*7)"')).stdout, /^v\d+\.\d+\.\d+ 42\n$/)
      assert.match((await sbx.commands.run('npm --version')).stdout, /^\d+\.\d+\.\d+\n$/)

      // A local Python package, installed without an index: by the user into ~/.local (pip.conf
      // allows it outside a venv), into a venv, and system-wide under sudo.
      for (const name of ['hello_user', 'hello_venv', 'hello_root']) {
        await sbx.files.write(`/home/user/src/${name}/setup.py`, `from setuptools import setup\nsetup(name="${name}", version="1.0", py_modules=["${name}"])\n`)
        await sbx.files.write(`/home/user/src/${name}/${name}.py`, `def hi():\n    return "hi from ${name}"\n`)
      }
      const pip = 'install --no-index --no-build-isolation --no-cache-dir -q'
      await sbx.commands.run(`cd /home/user/src && pip ${pip} ./hello_user`, long)
      assert.equal((await sbx.commands.run('python3 -c "import hello_user; print(hello_user.hi())"')).stdout, 'hi from hello_user\n')
      assert.match((await sbx.commands.run('python3 -c "import hello_user; print(hello_user.__file__)"')).stdout, /^\/home\/user\/\.local\//)
      await sbx.commands.run(`python3 -m venv /home/user/venv && cd /home/user/src && /home/user/venv/bin/pip ${pip} ./hello_venv`, long)
      assert.equal((await sbx.commands.run('/home/user/venv/bin/python -c "import hello_venv; print(hello_venv.hi())"')).stdout, 'hi from hello_venv\n')
      await sbx.commands.run(`cd /home/user/src && sudo pip ${pip} ./hello_root`, long)
      assert.match((await sbx.commands.run('python3 -c "import hello_root; print(hello_root.hi(), hello_root.__file__)"')).stdout, /^hi from hello_root \/usr\/local\/lib\/python3/)

      // A local npm package, installed offline into an app.
      await sbx.files.write('/home/user/lib1/package.json', JSON.stringify({ name: 'lib1', version: '1.0.0', main: 'index.js' }))
      await sbx.files.write('/home/user/lib1/index.js', 'module.exports = () => "hi from lib1"\n')
      await sbx.files.write('/home/user/app/package.json', JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
      await sbx.commands.run('cd /home/user/app && npm install --offline --no-audit --no-fund ../lib1', long)
      assert.equal((await sbx.commands.run('cd /home/user/app && node -e "console.log(require(\'lib1\')())"')).stdout, 'hi from lib1\n')
    } finally {
      await sbx.kill()
    }
  })
}

const procs = []
function topology(name, { runtime, prefix, pool, slow }) {
  describe(name, () => {
    let dev
    before(async () => {
      const [api, proxy, arpc, aproxy] = await freePorts(4)
      const dir = dataDir(runtime === 'qemu' ? 'devqemu' : 'dev')
      dev = new Proc(name, ['dev', ...(runtime ? ['--runtime', runtime] : []), '--data-dir', dir, '--api-key', testKey,
        '--listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${proxy}`,
        '--agent-listen', `127.0.0.1:${arpc}`, '--agent-proxy-listen', `127.0.0.1:${aproxy}`,
        '--slot-prefix', prefix, '--pool', pool])
      procs.push(dev)
      useEnv(api, proxy)
      await apiReady(`http://127.0.0.1:${api}`, testKey).catch((e) => { console.error(dev.tail()); throw e })
    })
    after(async () => {
      console.error(`hearth process logs: ${procs.map((p) => p.logFile).join(' ')}`)
      await dev?.stop()
    })
    edgeSuite({ slow })
  })
}

topology('base template edges: hearth dev (gVisor)', { prefix: 'he2eu', pool: '10.246.0.0/16' })
describe('base template edges on QEMU', { skip: process.env.HEARTH_E2E_QEMU === '0' && 'HEARTH_E2E_QEMU=0' }, () => {
  topology('base template edges: hearth dev --runtime qemu', { runtime: 'qemu', prefix: 'he2ev', pool: '10.247.0.0/16', slow: true })
})
