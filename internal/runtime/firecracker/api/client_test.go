package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/runtime/firecracker/api"
	"github.com/hearthsh/hearth/internal/runtime/firecracker/api/apitest"
)

// fake starts a contract-enforcing fake Firecracker and a client for it.
func fake(t *testing.T) (*apitest.Server, *api.Client) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fc.sock")
	srv, err := apitest.New(sock)
	if err != nil {
		t.Fatal(err)
	}
	c := api.New(sock)
	t.Cleanup(func() { c.Close(); srv.Close() })
	return srv, c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

// jsonEqual compares two JSON documents by value.
func jsonEqual(t *testing.T, got []byte, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("recorded body %q: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %q: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

// step is one client call, the route it must hit and the exact body Firecracker must get.
type step struct {
	name  string
	call  func(context.Context, *api.Client) error
	route string
	path  string
	body  string
}

// TestBootSequenceMatchesContract runs every configuration call Hearth makes to boot a VM,
// then the runtime calls, against the schema-validating fake: each must be accepted, hit
// the right method and path, and carry exactly the body Hearth means to send.
func TestBootSequenceMatchesContract(t *testing.T) {
	srv, c := fake(t)
	steps := []step{
		{"metrics", func(ctx context.Context, c *api.Client) error {
			return c.PutMetrics(ctx, api.Metrics{MetricsPath: "/metrics.fifo"})
		}, "PUT /metrics", "/metrics", `{"metrics_path":"/metrics.fifo"}`},
		{"machine config", func(ctx context.Context, c *api.Client) error {
			return c.PutMachineConfig(ctx, api.MachineConfig{VCPUCount: 2, MemSizeMiB: 512})
		}, "PUT /machine-config", "/machine-config", `{"vcpu_count":2,"mem_size_mib":512}`},
		{"boot source", func(ctx context.Context, c *api.Client) error {
			return c.PutBootSource(ctx, api.BootSource{KernelImagePath: "/vmlinux", BootArgs: "console=ttyS0"})
		}, "PUT /boot-source", "/boot-source", `{"kernel_image_path":"/vmlinux","boot_args":"console=ttyS0"}`},
		{"root drive", func(ctx context.Context, c *api.Client) error {
			return c.PutDrive(ctx, api.Drive{DriveID: "rootfs", PathOnHost: "/rootfs.ext4", IsRootDevice: true})
		}, "PUT /drives/{id}", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/rootfs.ext4","is_root_device":true,"is_read_only":false}`},
		{"network with tx limit", func(ctx context.Context, c *api.Client) error {
			return c.PutNetworkInterface(ctx, api.NetworkInterface{IfaceID: "eth0", HostDevName: "tap0",
				GuestMAC: "02:fc:00:00:00:02", TxRateLimiter: api.TxRateLimiter()})
		}, "PUT /network-interfaces/{id}", "/network-interfaces/eth0",
			`{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"02:fc:00:00:00:02",
			  "tx_rate_limiter":{"bandwidth":{"size":100000000,"refill_time":500}}}`},
		{"balloon", func(ctx context.Context, c *api.Client) error {
			return c.PutBalloon(ctx, api.Balloon{AmountMiB: 0, DeflateOnOOM: true, StatsPollingIntervalS: 1})
		}, "PUT /balloon", "/balloon", `{"amount_mib":0,"deflate_on_oom":true,"stats_polling_interval_s":1}`},
		{"entropy", func(ctx context.Context, c *api.Client) error {
			return c.PutEntropy(ctx, api.Entropy{})
		}, "PUT /entropy", "/entropy", `{}`},
		{"mmds config", func(ctx context.Context, c *api.Client) error {
			return c.PutMMDSConfig(ctx, api.MMDSConfig{Version: api.MMDSv2, NetworkInterfaces: []string{"eth0"}})
		}, "PUT /mmds/config", "/mmds/config", `{"version":"V2","network_interfaces":["eth0"]}`},
		{"mmds", func(ctx context.Context, c *api.Client) error {
			return c.PutMMDS(ctx, map[string]any{"hearth": map[string]string{"sandbox_id": "sbx1"}})
		}, "PUT /mmds", "/mmds", `{"hearth":{"sandbox_id":"sbx1"}}`},
		{"start", func(ctx context.Context, c *api.Client) error {
			return c.StartInstance(ctx)
		}, "PUT /actions", "/actions", `{"action_type":"InstanceStart"}`},
		{"inflate balloon", func(ctx context.Context, c *api.Client) error {
			return c.PatchBalloon(ctx, 300)
		}, "PATCH /balloon", "/balloon", `{"amount_mib":300}`},
		{"balloon stats interval", func(ctx context.Context, c *api.Client) error {
			return c.PatchBalloonStats(ctx, 2)
		}, "PATCH /balloon/statistics", "/balloon/statistics", `{"stats_polling_interval_s":2}`},
		{"pause", func(ctx context.Context, c *api.Client) error {
			return c.PauseVM(ctx)
		}, "PATCH /vm", "/vm", `{"state":"Paused"}`},
		{"snapshot", func(ctx context.Context, c *api.Client) error {
			return c.CreateSnapshot(ctx, api.SnapshotCreate{SnapshotType: api.SnapshotFull, SnapshotPath: "/snap/vm.state", MemFilePath: "/snap/mem"})
		}, "PUT /snapshot/create", "/snapshot/create", `{"snapshot_type":"Full","snapshot_path":"/snap/vm.state","mem_file_path":"/snap/mem"}`},
		{"resume", func(ctx context.Context, c *api.Client) error {
			return c.ResumeVM(ctx)
		}, "PATCH /vm", "/vm", `{"state":"Resumed"}`},
	}
	for i, st := range steps {
		if err := st.call(ctx(t), c); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		calls := srv.Calls()
		if len(calls) != i+1 {
			t.Fatalf("%s: server saw %d calls, want %d", st.name, len(calls), i+1)
		}
		got := calls[i]
		if got.Route != st.route || got.Path != st.path {
			t.Errorf("%s: hit %s (%s), want %s (%s)", st.name, got.Route, got.Path, st.route, st.path)
		}
		if !jsonEqual(t, got.Body, st.body) {
			t.Errorf("%s: body %s, want %s", st.name, got.Body, st.body)
		}
	}

	b, err := c.GetBalloon(ctx(t))
	if err != nil || b.AmountMiB != 300 || !b.DeflateOnOOM || b.StatsPollingIntervalS != 2 {
		t.Errorf("GetBalloon = %+v, %v; want the configured balloon at 300 MiB", b, err)
	}
	stats, err := c.GetBalloonStats(ctx(t))
	if err != nil || stats.ActualMiB != 300 || stats.TargetMiB != 300 {
		t.Errorf("GetBalloonStats = %+v, %v; want 300 MiB held", stats, err)
	}
}

// TestLoadSnapshotWithUffdBackend checks the restore call on a fresh VM.
func TestLoadSnapshotWithUffdBackend(t *testing.T) {
	srv, c := fake(t)
	if err := c.PutMetrics(ctx(t), api.Metrics{MetricsPath: "/m"}); err != nil {
		t.Fatal(err)
	}
	err := c.LoadSnapshot(ctx(t), api.SnapshotLoad{
		SnapshotPath: "/snap/vm.state",
		MemBackend:   &api.MemoryBackend{BackendType: api.BackendUffd, BackendPath: "/uffd.sock"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := srv.Calls()[1]
	want := `{"snapshot_path":"/snap/vm.state","mem_backend":{"backend_type":"Uffd","backend_path":"/uffd.sock"},
	          "enable_diff_snapshots":false,"resume_vm":false}`
	if got.Route != "PUT /snapshot/load" || !jsonEqual(t, got.Body, want) {
		t.Errorf("load sent %s %s, want PUT /snapshot/load %s", got.Route, got.Body, want)
	}
	if !srv.Paused() {
		t.Error("a snapshot loaded without resume_vm must stay paused")
	}
	if err := c.ResumeVM(ctx(t)); err != nil || srv.Paused() {
		t.Errorf("resume after load: %v, paused=%v", err, srv.Paused())
	}
}

// TestFaultMessageIsSurfaced: a 400 from Firecracker becomes an *api.Error with its
// fault_message, so the agent's logs and errors say what Firecracker disliked.
func TestFaultMessageIsSurfaced(t *testing.T) {
	srv, c := fake(t)
	srv.Fail("PUT /machine-config", "Invalid vCPU count.")
	err := c.PutMachineConfig(ctx(t), api.MachineConfig{VCPUCount: 1, MemSizeMiB: 128})
	var fe *api.Error
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v, want *api.Error", err)
	}
	if fe.StatusCode != 400 || fe.FaultMessage != "Invalid vCPU count." || fe.Method != "PUT" || fe.Path != "/machine-config" {
		t.Errorf("error = %+v", fe)
	}
	if !api.IsFault(err) || !strings.Contains(err.Error(), "Invalid vCPU count.") {
		t.Errorf("IsFault=%v, message %q", api.IsFault(err), err)
	}
}

// TestFakeRefusesWhatFirecrackerRefuses: the fake is only a useful contract if it says no
// where Firecracker does; these are the rules the driver's sequences depend on.
func TestFakeRefusesWhatFirecrackerRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(context.Context, *api.Client) error
		call  func(context.Context, *api.Client) error
	}{
		{"snapshot of a running VM", func(ctx context.Context, c *api.Client) error {
			if err := c.PutBootSource(ctx, api.BootSource{KernelImagePath: "/k"}); err != nil {
				return err
			}
			return c.StartInstance(ctx)
		}, func(ctx context.Context, c *api.Client) error {
			return c.CreateSnapshot(ctx, api.SnapshotCreate{SnapshotPath: "/s", MemFilePath: "/m"})
		}},
		{"configuration after boot", func(ctx context.Context, c *api.Client) error {
			if err := c.PutBootSource(ctx, api.BootSource{KernelImagePath: "/k"}); err != nil {
				return err
			}
			return c.StartInstance(ctx)
		}, func(ctx context.Context, c *api.Client) error {
			return c.PutMachineConfig(ctx, api.MachineConfig{VCPUCount: 1, MemSizeMiB: 128})
		}},
		{"load after configuration", func(ctx context.Context, c *api.Client) error {
			return c.PutMachineConfig(ctx, api.MachineConfig{VCPUCount: 1, MemSizeMiB: 128})
		}, func(ctx context.Context, c *api.Client) error {
			return c.LoadSnapshot(ctx, api.SnapshotLoad{SnapshotPath: "/s",
				MemBackend: &api.MemoryBackend{BackendType: api.BackendFile, BackendPath: "/m"}})
		}},
		{"start without kernel", nil, func(ctx context.Context, c *api.Client) error {
			return c.StartInstance(ctx)
		}},
		{"balloon not configured", nil, func(ctx context.Context, c *api.Client) error {
			return c.PatchBalloon(ctx, 10)
		}},
		{"drive id differs from path", nil, func(ctx context.Context, c *api.Client) error {
			return c.PutDrive(ctx, api.Drive{DriveID: "a/b", PathOnHost: "/x"})
		}},
		{"load without memory backend", nil, func(ctx context.Context, c *api.Client) error {
			return c.LoadSnapshot(ctx, api.SnapshotLoad{SnapshotPath: "/s"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c := fake(t)
			if tt.setup != nil {
				if err := tt.setup(ctx(t), c); err != nil {
					t.Fatalf("setup: %v", err)
				}
			}
			err := tt.call(ctx(t), c)
			var fe *api.Error
			if !errors.As(err, &fe) || fe.StatusCode != 400 || fe.FaultMessage == "" {
				t.Fatalf("err = %v, want a 400 with a fault_message", err)
			}
		})
	}
}

// TestValidatorIsStrict proves the schemas catch the mistakes a hand-written client makes.
func TestValidatorIsStrict(t *testing.T) {
	tests := []struct {
		name, route, body string
		ok                bool
	}{
		{"valid machine config", "PUT /machine-config", `{"vcpu_count":1,"mem_size_mib":128}`, true},
		{"misspelled field", "PUT /machine-config", `{"vcpu_cont":1,"mem_size_mib":128}`, false},
		{"unknown extra field", "PUT /machine-config", `{"vcpu_count":1,"mem_size_mib":128,"ht_enabled":false}`, false},
		{"wrong type", "PUT /machine-config", `{"vcpu_count":1,"mem_size_mib":"128"}`, false},
		{"vcpu count out of range", "PUT /machine-config", `{"vcpu_count":33,"mem_size_mib":128}`, false},
		{"missing required", "PUT /boot-source", `{"boot_args":"x"}`, false},
		{"bad enum", "PATCH /vm", `{"state":"Stopped"}`, false},
		{"negative bucket", "PUT /network-interfaces/{id}", `{"iface_id":"eth0","host_dev_name":"tap0","tx_rate_limiter":{"bandwidth":{"size":-1,"refill_time":500}}}`, false},
		{"misspelled nested field", "PUT /network-interfaces/{id}", `{"iface_id":"eth0","host_dev_name":"tap0","tx_rate_limiter":{"bandwidth":{"size":1,"refill_time_ms":500}}}`, false},
		{"refill time as string", "PUT /network-interfaces/{id}", `{"iface_id":"eth0","host_dev_name":"tap0","tx_rate_limiter":{"bandwidth":{"size":1,"refill_time":"500"}}}`, false},
		{"both memory sources", "PUT /snapshot/load", `{"snapshot_path":"/s","mem_file_path":"/m","mem_backend":{"backend_type":"File","backend_path":"/m"}}`, false},
		{"unknown backend", "PUT /snapshot/load", `{"snapshot_path":"/s","mem_backend":{"backend_type":"Shm","backend_path":"/m"}}`, false},
		{"body on GET", "GET /balloon", `{}`, false},
		{"mmds takes any object", "PUT /mmds", `{"anything":{"goes":[1,2]}}`, true},
		{"mmds outside link-local", "PUT /mmds/config", `{"network_interfaces":["eth0"],"ipv4_address":"10.0.0.1"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := apitest.Validate(tt.route, []byte(tt.body))
			if (err == nil) != tt.ok {
				t.Errorf("Validate(%s, %s) = %v, want ok=%v", tt.route, tt.body, err, tt.ok)
			}
		})
	}
}

// TestServerRejectsInvalidBody: the same validation runs on the wire, so a client bug is
// a 400 in tests just as it would be against Firecracker.
func TestServerRejectsInvalidBody(t *testing.T) {
	srv, c := fake(t)
	// api.MMDSConfig with an address outside 169.254/16 is valid Go but invalid JSON-side.
	err := c.PutMMDSConfig(ctx(t), api.MMDSConfig{NetworkInterfaces: []string{"eth0"}, IPv4Address: "10.1.2.3"})
	var fe *api.Error
	if !errors.As(err, &fe) || !strings.Contains(fe.FaultMessage, "deserializing") {
		t.Fatalf("err = %v, want a deserialization fault", err)
	}
	if got := srv.Calls(); len(got) != 1 || got[0].Status != 400 {
		t.Errorf("calls = %+v", got)
	}
	if err := c.PutMMDS(ctx(t), []int{1}); err == nil {
		t.Error("PUT /mmds with a JSON array was accepted")
	}
}

func TestRoute(t *testing.T) {
	tests := []struct{ method, path, want string }{
		{"PUT", "/drives/rootfs", "PUT /drives/{id}"},
		{"PUT", "/network-interfaces/eth0", "PUT /network-interfaces/{id}"},
		{"PATCH", "/vm", "PATCH /vm"},
		{"GET", "/balloon/statistics", "GET /balloon/statistics"},
		{"DELETE", "/vm", ""},
		{"PUT", "/drives/", ""},
		{"PUT", "/vsock", ""},
	}
	for _, tt := range tests {
		if got := apitest.Route(tt.method, tt.path); got != tt.want {
			t.Errorf("Route(%s %s) = %q, want %q", tt.method, tt.path, got, tt.want)
		}
	}
}
