package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"golang.org/x/net/http2"

	"github.com/hearthsh/hearth/internal/agent/sandbox"
	"github.com/hearthsh/hearth/internal/conntrack"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/gen/hostagent/v1/hostagentv1connect"
	procpb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
	"github.com/hearthsh/hearth/internal/netslot"
	"github.com/hearthsh/hearth/internal/proxy"
	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/gvisor"
	"github.com/hearthsh/hearth/internal/runtime/runtimetest"
)

// testSlotPrefix and testPool keep these tests' network objects apart from a running agent's
// and from other packages' tests.
const testSlotPrefix = "hagt"

var testPool = netip.MustParsePrefix("10.231.0.0/16")

// harness is a real agent: gVisor driver, network slots, RPC and proxy servers on loopback.
type harness struct {
	env      *runtimetest.Env
	dataDir  string
	mgr      *sandbox.Manager
	rpc      hostagentv1connect.HostAgentServiceClient
	proxyURL string
	rpcURL   string
	stop     func()
	agent    *Agent
}

var (
	envOnce sync.Once
	testEnv *runtimetest.Env
	envErr  error
)

func setupEnv(t testing.TB) *runtimetest.Env {
	t.Helper()
	envOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		testEnv, envErr = runtimetest.Setup(ctx, io.Discard)
	})
	if errors.Is(envErr, runtimetest.ErrUnavailable) {
		t.Skipf("gVisor test environment unavailable: %v", envErr)
	}
	if envErr != nil {
		t.Fatal(envErr)
	}
	return testEnv
}

// startAgent runs an agent over dataDir; stop simulates the process going away without
// cleaning up (as a crash would), so tests can restart over the same data dir.
func startAgent(t testing.TB, env *runtimetest.Env, dataDir string) *harness {
	t.Helper()
	return startAgentOn(t, env, dataDir, agentNet{testSlotPrefix, testPool, testCgroupParent})
}

// agentNet is what keeps one test agent's host objects apart from another's: the slot prefix
// (netns, interfaces, nftables table), the address pool and the cgroup parent.
type agentNet struct {
	prefix       string
	pool         netip.Prefix
	cgroupParent string
}

const testCgroupParent = "hearth-agent-test"

func startAgentOn(t testing.TB, env *runtimetest.Env, dataDir string, an agentNet, opts ...func(*sandbox.Config)) *harness {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	driver, err := gvisor.New(gvisor.Config{
		Runsc:        env.Runsc,
		StateDir:     filepath.Join(dataDir, "runsc"),
		SnapshotDir:  filepath.Join(dataDir, "template-snapshots"),
		CgroupParent: an.cgroupParent,
		Logger:       log,
	})
	if err != nil {
		t.Fatal(err)
	}
	slots, err := netslot.New(netslot.Config{CIDR: an.pool, Prefix: an.prefix, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Also unmounts runsc's null-netns in the state dir, so TempDir can be removed.
		driver.Reclaim(context.Background())
		slots.Teardown(context.Background())
	})
	conns := &conntrack.Tracker{}
	cfg := sandbox.Config{
		DataDir: filepath.Join(dataDir, "sandboxes"), Driver: driver, Slots: slots, Conns: conns,
		Templates: func(name string) (runtime.Template, error) {
			if name != "base" {
				return runtime.Template{}, fmt.Errorf("template %q is not built", name)
			}
			return env.Template, nil
		},
		Log: log, DefaultUser: "user", DefaultWorkdir: "/home/user",
	}
	for _, o := range opts {
		o(&cfg)
	}
	mgr := sandbox.New(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := mgr.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mgr.StartWarmPool(); err != nil { // nothing without cfg.WarmPool
		t.Fatal(err)
	}
	t.Cleanup(func() { mgr.StopWarmPool(context.Background()) })
	a := New(mgr, conns, "gvisor", log)
	mux := http.NewServeMux()
	mux.Handle(a.RPCHandler())
	rpcLn, _ := net.Listen("tcp", "127.0.0.1:0")
	proxyLn, _ := net.Listen("tcp", "127.0.0.1:0")
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	rpcSrv := &http.Server{Handler: mux, Protocols: p}
	proxySrv := &http.Server{Handler: a.ProxyHandler(), ConnContext: proxy.ConnContext}
	go rpcSrv.Serve(rpcLn)
	go proxySrv.Serve(proxyLn)
	h := &harness{
		env: env, dataDir: dataDir, mgr: mgr,
		rpc:      hostagentv1connect.NewHostAgentServiceClient(h2cClient(), "http://"+rpcLn.Addr().String()),
		proxyURL: "http://" + proxyLn.Addr().String(),
		rpcURL:   "http://" + rpcLn.Addr().String(),
		agent:    a,
	}
	h.stop = func() { rpcSrv.Close(); proxySrv.Close() }
	return h
}

// h2cClient speaks HTTP/2 without TLS, as the control plane does to the agent's RPC.
func h2cClient() *http.Client {
	return &http.Client{Transport: &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, n, a)
	}}}
}

func (h *harness) create(t testing.TB, id string) *pb.Sandbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := h.rpc.Create(ctx, connect.NewRequest(&pb.CreateRequest{SandboxId: id, Template: "base", Cpus: 1, MemoryMib: 512, EnvVars: map[string]string{"HEARTH_TEST": "1"}}))
	if err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	t.Cleanup(func() { h.rpc.Destroy(context.Background(), connect.NewRequest(&pb.DestroyRequest{SandboxId: id})) })
	return res.Msg.GetSandbox()
}

// envd returns a process client that reaches the sandbox's envd through the agent proxy,
// the way the SDK does: the sandbox named in headers.
func (h *harness) envd(id string) processconnect.ProcessClient {
	hc := &http.Client{Transport: headerTransport{id: id}}
	return processconnect.NewProcessClient(hc, h.proxyURL, connect.WithProtoJSON())
}

type headerTransport struct{ id string }

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(proxy.HeaderSandboxID, t.id)
	r.Header.Set(proxy.HeaderSandboxPort, "49983")
	r.Header.Set("Authorization", "Basic cm9vdDo=") // root:
	return http.DefaultTransport.RoundTrip(r)
}

// run executes a shell command in the sandbox through the proxy and returns stdout.
func (h *harness) run(t testing.TB, id, script string) (string, int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := h.envd(id).Start(ctx, connect.NewRequest(&procpb.StartRequest{Process: &procpb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", script}}}))
	if err != nil {
		t.Fatalf("run %q in %s: %v", script, id, err)
	}
	var out bytes.Buffer
	var code int32 = -100
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		out.Write(ev.GetData().GetStdout())
		out.Write(ev.GetData().GetStderr())
		if ev.GetEnd() != nil {
			code = ev.GetEnd().GetExitCode()
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("run %q in %s: %v", script, id, err)
	}
	return out.String(), code
}

// upload writes a file into the sandbox through envd's /files route on the proxy.
func (h *harness) upload(t testing.TB, id, path string, data []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", h.proxyURL+"/files?path="+path, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	res, err := headerTransport{id: id}.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("upload %s: %d %s", path, res.StatusCode, b)
	}
}

func (h *harness) get(path string) (int, string) {
	res, err := http.Get(h.proxyURL + path)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func (h *harness) state(id string) pb.State {
	res, err := h.rpc.Get(context.Background(), connect.NewRequest(&pb.GetRequest{SandboxId: id}))
	if err != nil {
		if connect.CodeOf(err) != connect.CodeNotFound {
			// Not an answer about the sandbox: say so, or a failing test blames its state.
			fmt.Fprintf(os.Stderr, "harness: get %s: %v\n", id, err)
		}
		return pb.State_STATE_UNSPECIFIED
	}
	return res.Msg.GetSandbox().GetState()
}

var (
	wsechoOnce sync.Once
	wsechoBin  []byte
	wsechoErr  error
)

// wsecho builds the static test server that runs inside sandboxes.
func wsecho(t testing.TB) []byte {
	t.Helper()
	wsechoOnce.Do(func() {
		out := filepath.Join(os.TempDir(), "hearth-wsecho-"+strconv.Itoa(os.Getpid()))
		cmd := exec.Command("go", "build", "-o", out, "./testdata/wsecho")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			wsechoErr = fmt.Errorf("build wsecho: %v\n%s", err, b)
			return
		}
		wsechoBin, wsechoErr = os.ReadFile(out)
		os.Remove(out)
	})
	if wsechoErr != nil {
		t.Fatal(wsechoErr)
	}
	return wsechoBin
}

// startServers uploads wsecho and starts it on 0.0.0.0:8080 and on 127.0.0.1:8081.
func (h *harness) startServers(t testing.TB, id string) {
	t.Helper()
	h.upload(t, id, "/usr/local/bin/wsecho", wsecho(t))
	h.run(t, id, "chmod +x /usr/local/bin/wsecho")
	for _, addr := range []string{"0.0.0.0:8080", "127.0.0.1:8081"} {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := h.envd(id).Start(ctx, connect.NewRequest(&procpb.StartRequest{Process: &procpb.ProcessConfig{Cmd: "/usr/local/bin/wsecho", Args: []string{"-addr", addr}}}))
		if err != nil {
			t.Fatal(err)
		}
		stream.Receive()
		cancel() // the server keeps running without the stream
	}
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSandboxLifecycle(t *testing.T) {
	env := setupEnv(t)
	h := startAgent(t, env, t.TempDir())
	defer h.stop()

	a := h.create(t, "lifecycle-a")
	if a.GetState() != pb.State_STATE_RUNNING || a.GetEnvdVersion() == "" {
		t.Fatalf("created sandbox: %v", a)
	}

	t.Run("exec through envd", func(t *testing.T) {
		out, code := h.run(t, "lifecycle-a", "echo $HEARTH_TEST; id -un; cat /etc/debian_version")
		if code != 0 || !strings.HasPrefix(out, "1\nroot\n12.") {
			t.Fatalf("exec: code %d output %q", code, out)
		}
	})

	h.startServers(t, "lifecycle-a")
	t.Run("http through the proxy", func(t *testing.T) {
		eventually(t, 10*time.Second, "server on 0.0.0.0:8080 reachable", func() bool {
			code, body := h.get("/proxy/lifecycle-a/8080/")
			return code == 200 && body == "hello from 0.0.0.0:8080"
		})
		// Bound to 127.0.0.1 only: reachable through envd's port forwarder.
		eventually(t, 10*time.Second, "server on 127.0.0.1:8081 reachable", func() bool {
			code, body := h.get("/proxy/lifecycle-a/8081/")
			return code == 200 && body == "hello from 127.0.0.1:8081"
		})
		if code, _ := h.get("/proxy/lifecycle-a/49983/init"); code != http.StatusNotFound {
			t.Errorf("envd /init through the proxy: %d, want 404", code)
		}
		// As E2B's proxy: 502 with its JSON body, so the SDKs read "not running".
		if code, body := h.get("/proxy/no-such-sandbox/8080/"); code != http.StatusBadGateway ||
			!strings.Contains(body, `"message":"The sandbox was not found`) || !strings.Contains(body, `"sandboxId":"no-such-sandbox"`) ||
			!strings.Contains(body, `"code":502`) || strings.Contains(body, `"port"`) {
			t.Errorf("unknown sandbox: %d %s, want 502 with E2B's not-found body", code, body)
		}
	})

	t.Run("websocket through the proxy", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, strings.Replace(h.proxyURL, "http", "ws", 1)+"/proxy/lifecycle-a/8080/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		for i := range 5 {
			msg := "msg" + strconv.Itoa(i)
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			if _, got, err := c.Read(ctx); err != nil || string(got) != "echo:"+msg {
				t.Fatalf("websocket read %q, %v", got, err)
			}
		}
	})

	t.Run("isolation between sandboxes", func(t *testing.T) {
		b := h.create(t, "lifecycle-b")
		h.run(t, "lifecycle-b", "echo secret-b > /tmp/only-in-b; (python3 -m http.server 8080 --bind 0.0.0.0 >/dev/null 2>&1 &)")
		bIP, _, _ := net.SplitHostPort(b.GetEnvdAddress())
		eventually(t, 10*time.Second, "b serves", func() bool { c, _ := h.get("/proxy/lifecycle-b/8080/"); return c == 200 })
		out, code := h.run(t, "lifecycle-a", "curl -sS -m 3 http://"+bIP+":8080/ 2>&1; echo rc=$?")
		if !strings.Contains(out, "rc=") || strings.Contains(out, "rc=0") || code != 0 {
			t.Fatalf("sandbox a reached sandbox b: %q", out)
		}
		out, _ = h.run(t, "lifecycle-a", "cat /tmp/only-in-b 2>&1 || true")
		if strings.Contains(out, "secret-b") {
			t.Fatal("sandbox a sees sandbox b's files")
		}
	})

	t.Run("pause drains 50 proxy connections", func(t *testing.T) {
		const n = 50
		ended := make(chan time.Time, n)
		for range n {
			res, err := http.Get(h.proxyURL + "/proxy/lifecycle-a/8080/hold")
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("open held connection: %v %v", res, err)
			}
			go func() {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				ended <- time.Now()
			}()
		}
		start := time.Now()
		pauseErr := make(chan error, 1)
		go func() {
			_, err := h.rpc.Pause(context.Background(), connect.NewRequest(&pb.PauseRequest{SandboxId: "lifecycle-a"}))
			pauseErr <- err
		}()
		eventually(t, 5*time.Second, "state pausing", func() bool { return h.state("lifecycle-a") == pb.State_STATE_PAUSING })
		if code, body := h.get("/proxy/lifecycle-a/8080/"); code != http.StatusConflict || !strings.Contains(body, "pausing") {
			t.Errorf("proxy during pause: %d %s, want 409 naming the state", code, body)
		}
		_, err := h.rpc.Resume(context.Background(), connect.NewRequest(&pb.ResumeRequest{SandboxId: "lifecycle-a"}))
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "pausing") {
			t.Errorf("resume during pause: %v, want failed_precondition naming the state", err)
		}
		for i := range n {
			select {
			case at := <-ended:
				if d := at.Sub(start); d > sandbox.DrainGrace+time.Second {
					t.Fatalf("connection %d closed after %v, want within grace+1s", i, d)
				}
			case <-time.After(sandbox.DrainGrace + 2*time.Second):
				t.Fatalf("only %d of %d connections closed", i, n)
			}
		}
		if err := <-pauseErr; err != nil {
			t.Fatal(err)
		}
		if st := h.state("lifecycle-a"); st != pb.State_STATE_PAUSED {
			t.Fatalf("state after pause: %v", st)
		}
		if code, body := h.get("/proxy/lifecycle-a/8080/"); code != http.StatusBadGateway || !strings.Contains(body, "is paused") {
			t.Errorf("proxy to paused sandbox: %d %s, want 502 saying it is paused", code, body)
		}
		if _, err := h.rpc.Resume(context.Background(), connect.NewRequest(&pb.ResumeRequest{SandboxId: "lifecycle-a"})); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "server reachable after resume", func() bool {
			code, _ := h.get("/proxy/lifecycle-a/8080/")
			return code == 200
		})
	})

	t.Run("ten pause and resume cycles keep files and processes", func(t *testing.T) {
		h.run(t, "lifecycle-a", "head -c 1048576 /dev/urandom > /home/user/data.bin; sha256sum /home/user/data.bin > /tmp/data.sum")
		h.run(t, "lifecycle-a", "(i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done) >/dev/null 2>&1 &")
		sum, _ := h.run(t, "lifecycle-a", "cat /tmp/data.sum")
		last := 0
		for cycle := range 10 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if _, err := h.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: "lifecycle-a"})); err != nil {
				t.Fatalf("cycle %d pause: %v", cycle, err)
			}
			if _, err := h.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: "lifecycle-a"})); err != nil {
				t.Fatalf("cycle %d resume: %v", cycle, err)
			}
			cancel()
			if got, _ := h.run(t, "lifecycle-a", "sha256sum /home/user/data.bin"); got != sum {
				t.Fatalf("cycle %d: file changed: %q vs %q", cycle, got, sum)
			}
			var now int
			eventually(t, 5*time.Second, "counter advances", func() bool {
				out, _ := h.run(t, "lifecycle-a", "cat /tmp/counter")
				now, _ = strconv.Atoi(strings.TrimSpace(out))
				return now > last
			})
			last = now
		}
	})

	t.Run("destroy leaves nothing", func(t *testing.T) {
		// lifecycle-b went with the cleanup of the subtest that created it.
		if _, err := h.rpc.Destroy(context.Background(), connect.NewRequest(&pb.DestroyRequest{SandboxId: "lifecycle-a"})); err != nil {
			t.Fatalf("destroy lifecycle-a: %v", err)
		}
		if _, err := h.rpc.Get(context.Background(), connect.NewRequest(&pb.GetRequest{SandboxId: "lifecycle-a"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("get after destroy: %v, want not_found", err)
		}
		assertNoLeftovers(t)
	})
}

// TestAgentRestart: a crashed agent leaves a running and a paused sandbox; the next agent
// removes every trace of the running one and can still resume the paused one.
func TestAgentRestart(t *testing.T) {
	env := setupEnv(t)
	dataDir := t.TempDir()
	h := startAgent(t, env, dataDir)
	h.create(t, "restart-run")
	h.create(t, "restart-paused")
	h.run(t, "restart-paused", "echo kept > /tmp/kept")
	if _, err := h.rpc.Pause(context.Background(), connect.NewRequest(&pb.PauseRequest{SandboxId: "restart-paused"})); err != nil {
		t.Fatal(err)
	}
	h.stop() // crash: no destroy, no release

	h2 := startAgent(t, env, dataDir)
	defer h2.stop()
	list, err := h2.rpc.List(context.Background(), connect.NewRequest(&pb.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Msg.GetSandboxes()) != 1 || list.Msg.GetSandboxes()[0].GetSandboxId() != "restart-paused" {
		t.Fatalf("after restart: %v, want only the paused sandbox", list.Msg.GetSandboxes())
	}
	// Nothing of the running sandbox survives: no runsc process, no netns beyond none.
	if out, _ := exec.Command("pgrep", "-f", "restart-run").CombinedOutput(); len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("processes of the crashed sandbox survive: %s", out)
	}
	if _, err := h2.rpc.Resume(context.Background(), connect.NewRequest(&pb.ResumeRequest{SandboxId: "restart-paused"})); err != nil {
		t.Fatal(err)
	}
	if out, _ := h2.run(t, "restart-paused", "cat /tmp/kept"); out != "kept\n" {
		t.Fatalf("file after restart and resume: %q", out)
	}
	if _, err := h2.rpc.Destroy(context.Background(), connect.NewRequest(&pb.DestroyRequest{SandboxId: "restart-paused"})); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t)
}

// assertNoLeftovers checks that no netns, interface or runsc process of the test agent remains.
func assertNoLeftovers(t *testing.T) {
	t.Helper()
	assertNoLeftoversOf(t, testSlotPrefix, testCgroupParent)
}

func assertNoLeftoversOf(t *testing.T, prefix, cgroupParent string) {
	t.Helper()
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			t.Errorf("leftover netns %s", e.Name())
		}
	}
	links, _ := net.Interfaces()
	for _, l := range links {
		if strings.HasPrefix(l.Name, prefix+"-") {
			t.Errorf("leftover interface %s", l.Name)
		}
	}
	for _, hier := range []string{"memory", "cpu", "pids"} {
		if des, err := os.ReadDir(filepath.Join("/sys/fs/cgroup", hier, cgroupParent)); err == nil {
			for _, d := range des {
				if d.IsDir() {
					t.Errorf("leftover cgroup %s/%s/%s", hier, cgroupParent, d.Name())
				}
			}
		}
	}
}

// TestMaxSandboxes: an agent started with a sandbox limit refuses the create, and the resume,
// that would run one more (ResourceExhausted, saying how to get room), and admits again once a
// sandbox is paused; paused sandboxes do not count.
func TestMaxSandboxes(t *testing.T) {
	env := setupEnv(t)
	h := startAgentOn(t, env, t.TempDir(), agentNet{testSlotPrefix, testPool, testCgroupParent}, func(c *sandbox.Config) { c.MaxActive = 1 })
	defer h.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h.create(t, "limit-a")
	full := func(what string, err error) {
		t.Helper()
		if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "--max-sandboxes") {
			t.Fatalf("%s on a full host: %v, want ResourceExhausted naming --max-sandboxes", what, err)
		}
	}
	_, err := h.rpc.Create(ctx, connect.NewRequest(&pb.CreateRequest{SandboxId: "limit-b", Template: "base", Cpus: 1, MemoryMib: 512}))
	full("create", err)
	if _, err := h.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: "limit-a"})); err != nil {
		t.Fatal(err)
	}
	h.create(t, "limit-b")
	_, err = h.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: "limit-a"}))
	full("resume", err)
	if got, err := h.rpc.Get(ctx, connect.NewRequest(&pb.GetRequest{SandboxId: "limit-a"})); err != nil || got.Msg.GetSandbox().GetState() != pb.State_STATE_PAUSED {
		t.Fatalf("refused resume left %v, %v; want it paused", got, err)
	}
	if _, err := h.rpc.Destroy(ctx, connect.NewRequest(&pb.DestroyRequest{SandboxId: "limit-b"})); err != nil {
		t.Fatal(err)
	}
	if _, err := h.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: "limit-a"})); err != nil {
		t.Fatalf("resume with room: %v", err)
	}
}
