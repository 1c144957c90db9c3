package firecracker

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/runtime/firecracker/api"
)

// TestLifecycleAgainstFakeFirecracker drives create, pause, resume and destroy through a
// fake Firecracker that enforces the API contract, and checks the order of the calls, the
// files a user's sandbox depends on, and that no process outlives its phase.
func TestLifecycleAgainstFakeFirecracker(t *testing.T) {
	r := newRig(t)
	s := r.spec("life-1")
	l, err := r.d.newLayout(s.ID)
	must(t, err)

	must(t, r.d.Create(ctxT(t), s))
	wantBoot := []string{"PUT /machine-config", "PUT /boot-source", "PUT /drives/{id}", "PUT /network-interfaces/{id}",
		"PUT /balloon", "PUT /entropy", "PUT /mmds/config", "PUT /mmds", "PUT /actions"}
	boot := r.calls()
	if got := describeAll(boot); !slices.Equal(got, wantBoot) {
		t.Fatalf("create calls\n got %q\nwant %q", got, wantBoot)
	}
	var drive api.Drive
	must(t, json.Unmarshal(boot[2].Body, &drive))
	if drive.PathOnHost != l.host(rootfsFile) || !drive.IsRootDevice || drive.IsReadOnly {
		t.Errorf("root drive %+v", drive)
	}
	// The VM writes the sandbox's own disk, not a copy in the VM root.
	di, err1 := os.Stat(drive.PathOnHost)
	si, err2 := os.Stat(filepath.Join(s.Dir, rootfsFile))
	if err1 != nil || err2 != nil || !os.SameFile(di, si) {
		t.Errorf("VM's disk is not the sandbox's disk: %v %v", err1, err2)
	}
	var nic api.NetworkInterface
	must(t, json.Unmarshal(boot[3].Body, &nic))
	if nic.HostDevName != "tap0" || nic.TxRateLimiter == nil || nic.TxRateLimiter.Bandwidth.Size != 100_000_000 ||
		nic.TxRateLimiter.Bandwidth.RefillTimeMs != 500 {
		t.Errorf("network interface %+v", nic)
	}
	var boots api.BootSource
	must(t, json.Unmarshal(boot[1].Body, &boots))
	if !strings.Contains(boots.BootArgs, "hearth.sandbox_id=life-1") || !strings.Contains(boots.BootArgs, "ip=169.254.0.2::169.254.0.1:255.255.255.252::eth0:off") {
		t.Errorf("boot args %q", boots.BootArgs)
	}
	if len(vmPIDs(l.vmID)) != 1 {
		t.Fatalf("want one firecracker running, have %v", vmPIDs(l.vmID))
	}

	must(t, r.d.Pause(ctxT(t), s))
	pause := describeAll(r.calls()[len(boot):])
	// 480 MiB guest (512 - VMM overhead), 64 used by the fake guest, 32 left as reserve.
	wantPause := []string{"GET /balloon/statistics", "PATCH /balloon 384", "GET /balloon/statistics",
		"PATCH /vm Paused", "PUT /snapshot/create"}
	if !slices.Equal(pause, wantPause) {
		t.Fatalf("pause calls\n got %q\nwant %q", pause, wantPause)
	}
	if pids := vmPIDs(l.vmID); len(pids) != 0 {
		t.Errorf("firecracker still running after pause: %v", pids)
	}
	for _, f := range []string{stateFile, memFile} {
		if !exists(filepath.Join(s.Dir, snapDir, f)) {
			t.Errorf("snapshot lacks %s", f)
		}
	}
	if exists(filepath.Join(s.Dir, snapTmpDir)) || exists(l.jail) {
		t.Error("pause left its temp dir or the VM root behind")
	}

	n := len(r.calls())
	must(t, r.d.Resume(ctxT(t), s))
	resume := r.calls()[n:]
	wantResume := []string{"PUT /snapshot/load", "PATCH /vm Resumed", "PATCH /balloon 0", "PUT /mmds"}
	if got := describeAll(resume); !slices.Equal(got, wantResume) {
		t.Fatalf("resume calls\n got %q\nwant %q", got, wantResume)
	}
	var load api.SnapshotLoad
	must(t, json.Unmarshal(resume[0].Body, &load))
	if load.MemBackend == nil || load.MemBackend.BackendType != "Uffd" || load.MemBackend.BackendPath != l.host(uffdSock) || load.ResumeVM {
		t.Errorf("snapshot/load %+v", load)
	}
	// The fake checked every restored page against the snapshot through the uffd server
	// before answering 204; the server is still serving the running VM.
	v := r.d.get(s.ID)
	if v == nil || v.memServer == nil {
		t.Fatal("resumed VM not tracked with its memory server")
	}
	if st := v.memServer.srv.Stats(); st.Sessions != 1 || st.CopiedBytes != fakeMemBytes {
		t.Errorf("uffd server stats %+v: want one session that copied all %d bytes", st, fakeMemBytes)
	}

	must(t, r.d.Destroy(ctxT(t), s))
	if pids := vmPIDs(l.vmID); len(pids) != 0 {
		t.Errorf("firecracker still running after destroy: %v", pids)
	}
	if exists(s.Dir) || exists(l.jail) {
		t.Error("destroy left the sandbox dir or the VM root")
	}
}

// TestFailedPauseKeepsSandboxRunning: whatever goes wrong while snapshotting, the VM is
// resumed and keeps running, the balloon is given back, and no snapshot, complete or
// partial, appears under the sandbox dir.
func TestFailedPauseKeepsSandboxRunning(t *testing.T) {
	tests := []struct {
		name, env, val, wantErr string
	}{
		{"firecracker refuses the snapshot", envFail, "PUT /snapshot/create=No space left on device (os error 28)", "No space left on device"},
		{"memory file never written", envPartial, "1", "snapshot incomplete"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			t.Setenv(tt.env, tt.val)
			s := r.spec("fail-1")
			l, err := r.d.newLayout(s.ID)
			must(t, err)
			must(t, r.d.Create(ctxT(t), s))
			n := len(r.calls())

			err = r.d.Pause(ctxT(t), s)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Pause err = %v, want one saying %q", err, tt.wantErr)
			}
			got := describeAll(r.calls()[n:])
			create := "PUT /snapshot/create"
			if tt.env == envFail {
				create += " -> 400"
			}
			want := []string{"GET /balloon/statistics", "PATCH /balloon 384", "GET /balloon/statistics",
				"PATCH /vm Paused", create, "PATCH /vm Resumed", "PATCH /balloon 0"}
			if !slices.Equal(got, want) {
				t.Fatalf("calls\n got %q\nwant %q", got, want)
			}
			if len(vmPIDs(l.vmID)) != 1 || r.d.get(s.ID) == nil {
				t.Fatal("the VM did not survive the failed pause")
			}
			if _, err := r.d.get(s.ID).api.GetBalloon(ctxT(t)); err != nil {
				t.Errorf("VM API unreachable after failed pause: %v", err)
			}
			for _, p := range []string{filepath.Join(s.Dir, snapDir), filepath.Join(s.Dir, snapTmpDir), l.host(snapTmpDir)} {
				if exists(p) {
					t.Errorf("failed pause left %s", p)
				}
			}
		})
	}
}

// TestFailedPauseKeepsEarlierSnapshot: a restored sandbox runs off its snapshot's memory;
// a later pause that fails must leave that snapshot exactly as it was.
func TestFailedPauseKeepsEarlierSnapshot(t *testing.T) {
	r := newRig(t)
	s := r.spec("keep-1")
	must(t, r.d.Create(ctxT(t), s))
	must(t, r.d.Pause(ctxT(t), s))
	state := filepath.Join(s.Dir, snapDir, stateFile)
	before, err := os.Stat(state)
	must(t, err)
	t.Setenv(envFail, "PUT /snapshot/create=disk quota exceeded")
	must(t, r.d.Resume(ctxT(t), s))
	if err := r.d.Pause(ctxT(t), s); err == nil {
		t.Fatal("pause succeeded although snapshot/create failed")
	}
	after, err := os.Stat(state)
	if err != nil || !os.SameFile(before, after) || !exists(filepath.Join(s.Dir, snapDir, memFile)) {
		t.Errorf("earlier snapshot changed by a failed pause: %v", err)
	}
}

// TestReclaimKillsOnlyThisAgentsVMs starts VM processes as an earlier agent run would have
// left them, one of this agent's and one of another agent's, and reclaims.
func TestReclaimKillsOnlyThisAgentsVMs(t *testing.T) {
	r := newRig(t)
	start := func(id string) *process {
		l := layout{vmID: id, jail: filepath.Join(r.base, "run", "firecracker", id)}
		l.root = filepath.Join(l.jail, "root")
		must(t, os.MkdirAll(l.root, 0o755))
		s := r.spec(id)
		must(t, os.MkdirAll(s.Dir, 0o755))
		p, c, err := r.d.start(ctxT(t), s, l)
		must(t, err)
		c.Close()
		return p
	}
	mine := start(r.d.cfg.IDPrefix + "-old")
	other := start("otheragent-old")
	t.Cleanup(func() { _ = other.kill(ctxT(t)) })

	must(t, r.d.Reclaim(ctxT(t)))
	// Reclaim returns once the process is dead; this test process, its parent, reaps it a
	// moment later.
	select {
	case <-mine.done:
	case <-time.After(5 * time.Second):
		t.Error("this agent's leftover VM survived Reclaim")
	}
	select {
	case <-other.done:
		t.Error("Reclaim killed another agent's VM")
	default:
	}
	if ents, _ := os.ReadDir(filepath.Join(r.base, "run")); len(ents) != 0 {
		t.Errorf("RunDir not emptied: %v", ents)
	}
}
