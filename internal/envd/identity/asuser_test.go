package identity

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if !IsRoot() {
		t.Skip("acting as another user needs root")
	}
}

func nobody(t *testing.T) User {
	t.Helper()
	u, err := Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Inside Do the kernel treats the thread as the user: root-only files are refused and new
// files are the user's. Afterwards, and on every other thread meanwhile, envd is root.
func TestDoActsAsTheUser(t *testing.T) {
	requireRoot(t)
	if err := Verify(); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	u := nobody(t)
	inside, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-inside
		// Another goroutine, on another thread, keeps root's access while Do runs.
		if f, err := os.Open(secret); err != nil {
			t.Errorf("root lost access while another thread acted as nobody: %v", err)
		} else {
			f.Close()
		}
		close(release)
	}()
	err := Do(u, func() error {
		close(inside)
		<-release
		if _, err := os.Open(secret); !errors.Is(err, syscall.EACCES) {
			t.Errorf("open a root-only file as nobody: %v, want EACCES", err)
		}
		return os.WriteFile(filepath.Join(dir, "new"), nil, 0o644)
	})
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "new"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != u.UID || st.Gid != u.GID {
		t.Errorf("file created as nobody is owned by %d:%d, want %d:%d", st.Uid, st.Gid, u.UID, u.GID)
	}
	for i := 0; i < 20; i++ { // whichever thread runs this goroutine now is root
		if f, err := os.Open(secret); err != nil {
			t.Fatalf("root cannot open its file after Do: %v", err)
		} else {
			f.Close()
		}
	}
}

// When envd is not root it can act only as itself: anyone else is refused and fn never runs.
func TestDoFailsClosedWhenNotRoot(t *testing.T) {
	saved := processUID
	processUID = 1000
	t.Cleanup(func() { processUID = saved })
	ran := false
	err := Do(User{Name: "other", UID: 1001, GID: 1001}, func() error { ran = true; return nil })
	if !errors.Is(err, ErrCannotActAs) || ran {
		t.Fatalf("Do as another user from uid 1000: err %v, ran %v; want ErrCannotActAs and not run", err, ran)
	}
	if err := Do(User{Name: "self", UID: 1000, GID: 1000}, func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("Do as envd's own user: err %v, ran %v", err, ran)
	}
}

// Root acting as root needs no switch.
func TestDoAsRootRunsDirectly(t *testing.T) {
	requireRoot(t)
	ran := false
	if err := Do(User{Name: "root"}, func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("err %v, ran %v", err, ran)
	}
}

// BenchmarkDoStat is the cost of acting as a user around one stat, every file request's
// minimum.
func BenchmarkDoStat(b *testing.B) {
	if !IsRoot() {
		b.Skip("acting as another user needs root")
	}
	u, err := Lookup("nobody")
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		if err := Do(u, func() error { _, err := os.Stat("/"); return err }); err != nil {
			b.Fatal(err)
		}
	}
}
