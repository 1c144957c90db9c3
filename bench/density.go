package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

const densityDefinition = "ramp: base sandboxes created `par` at a time (each until its first `true` " +
	"has run) until `target` run, the ramp's time is up, MemAvailable falls below the reserve, or " +
	"creates fail 3 times in a row; the first of these is the limit reported. host memory per idle " +
	"sandbox = (MemAvailable before − after) / N (median of 3 reads 1 s apart) after the ramp " +
	"and a settle; file handles (/proc/sys/fs/file-nr), hearth dev's descriptors and tasks " +
	"(threads, which take PIDs) likewise per sandbox, and how many sandboxes each would allow " +
	"(its limit minus its use before, over the use per sandbox). sustained: with the ramp's " +
	"sandboxes still running, `par` workers each kill the oldest sandbox and create one, for a " +
	"bounded time and count: creates/s is completed creates over that time. The 512 MiB " +
	"memory limit of a sandbox is a cap, not a reservation; other processes on the host move " +
	"the memory figure too."

// densityConfig bounds the density section in count and time.
type densityConfig struct {
	Target, Par int
	Ramp        time.Duration
	Settle      time.Duration
	Sustain     time.Duration
	SustainMax  int
	// HearthPID is hearth dev's process, whose descriptors are counted (0: not counted).
	HearthPID int
	// Pool is hearth dev's network-slot pool, for the slot limit (one /30 per sandbox).
	Pool string
}

// hostCounts are the host-wide resources sandboxes use, read at one instant.
type hostCounts struct {
	memAvail            int64 // bytes
	files, filesMax     int64 // /proc/sys/fs/file-nr: allocated, maximum
	tasks               int64 // threads on the host, each taking a PID
	pidMax, threadsMax  int64
	hearthFDs, fdsLimit int64 // hearth dev's open descriptors and its soft limit; 0 unknown
}

func readHostCounts(ctx context.Context, hearthPID int) (hostCounts, error) {
	var c hostCounts
	var err error
	if c.memAvail, err = memAvailable(ctx); err != nil {
		return c, err
	}
	if f := procFields("/proc/sys/fs/file-nr"); len(f) == 3 {
		c.files, c.filesMax = atoi64(f[0]), atoi64(f[2])
	}
	if f := procFields("/proc/loadavg"); len(f) >= 4 {
		if _, total, ok := strings.Cut(f[3], "/"); ok {
			c.tasks = atoi64(total)
		}
	}
	if f := procFields("/proc/sys/kernel/pid_max"); len(f) == 1 {
		c.pidMax = atoi64(f[0])
	}
	if f := procFields("/proc/sys/kernel/threads-max"); len(f) == 1 {
		c.threadsMax = atoi64(f[0])
	}
	if hearthPID > 0 {
		if fds, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(hearthPID), "fd")); err == nil {
			c.hearthFDs = int64(len(fds))
		}
		if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(hearthPID), "limits")); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "Max open files") {
					if f := strings.Fields(strings.TrimPrefix(l, "Max open files")); len(f) > 0 {
						c.fdsLimit = atoi64(f[0])
					}
				}
			}
		}
	}
	return c, nil
}

func procFields(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

func atoi64(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// liveSet is the density section's running sandboxes, oldest first.
type liveSet struct {
	mu  sync.Mutex
	sbs []*hearth.Sandbox
}

func (l *liveSet) push(sb *hearth.Sandbox) {
	l.mu.Lock()
	l.sbs = append(l.sbs, sb)
	l.mu.Unlock()
}

func (l *liveSet) popOldest() *hearth.Sandbox {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.sbs) == 0 {
		return nil
	}
	sb := l.sbs[0]
	l.sbs = l.sbs[1:]
	return sb
}

func (l *liveSet) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sbs)
}

func (l *liveSet) all() []*hearth.Sandbox {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*hearth.Sandbox(nil), l.sbs...)
}

// errRampStop ends the ramp's workers without counting as a failure.
var errRampStop = errors.New("ramp stopped")

func runDensity(ctx context.Context, e *env, dc densityConfig, s *Section) error {
	ctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	defer cancel()
	var live liveSet
	// Every sandbox is killed whatever happens, with its own time: the section's may be up.
	defer func() {
		kctx, kcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer kcancel()
		if err := forEach(kctx, live.all(), 8, func(ctx context.Context, _ int, sb *hearth.Sandbox) error { return e.kill(ctx, sb.ID) }); err != nil {
			fmt.Fprintln(os.Stderr, "bench: density cleanup:", err)
		}
	}()
	before, err := readHostCounts(ctx, dc.HearthPID)
	if err != nil {
		return err
	}
	memTotal, err := meminfo("MemTotal")
	if err != nil {
		return err
	}
	reserve := max(int64(2)<<30, memTotal/10)

	// Ramp: workers take the next attempt until a stop condition; the first one met is the
	// limit reported.
	var (
		mu        sync.Mutex
		attempts  int
		failsRow  int
		stopWhy   string
		firstErr  error
		createDur samples
	)
	stop := func(why string) {
		if stopWhy == "" {
			stopWhy = why
		}
	}
	rctx, rcancel := context.WithTimeout(ctx, dc.Ramp)
	start := time.Now()
	_ = forEach(rctx, make([]struct{}, dc.Par), dc.Par, func(ctx context.Context, _ int, _ struct{}) error {
		for {
			mu.Lock()
			switch {
			case stopWhy != "":
			case attempts >= dc.Target:
				stop(fmt.Sprintf("count: the target of %d was reached", dc.Target))
			case ctx.Err() != nil:
				stop(fmt.Sprintf("time: the ramp's %s were up", dc.Ramp))
			}
			if stopWhy == "" {
				if m, err := meminfo("MemAvailable"); err == nil && m < reserve {
					stop(fmt.Sprintf("memory: MemAvailable %d MiB fell below the %d MiB reserve", m>>20, reserve>>20))
				}
			}
			if stopWhy != "" {
				mu.Unlock()
				return errRampStop
			}
			attempts++
			mu.Unlock()
			d, sb, err := createReady(ctx, e)
			if sb != nil {
				live.push(sb)
			}
			mu.Lock()
			if err != nil && ctx.Err() == nil {
				failsRow++
				if firstErr == nil {
					firstErr = err
				}
				if failsRow >= 3 {
					stop("create failed 3 times in a row: " + oneLine(err.Error(), 120))
				}
			} else if err == nil {
				failsRow = 0
				createDur = append(createDur, d)
			}
			mu.Unlock()
		}
	})
	ramp := time.Since(start)
	rcancel()
	n := live.len()
	if n == 0 {
		if firstErr != nil {
			return fmt.Errorf("no sandbox created: %w", firstErr)
		}
		return fmt.Errorf("no sandbox created (%s)", stopWhy)
	}
	s.add("idle sandboxes running", float64(n), fmt.Sprintf("of a target of %d", dc.Target))
	s.note("ramp stopped by", stopWhy)
	if firstErr != nil {
		s.note("ramp: first create error", oneLine(firstErr.Error(), 120))
	}
	s.add(fmt.Sprintf("ramp: created %d (%d at a time)", n, dc.Par), ramp.Seconds(), fmt.Sprintf("s (%.1f creates/s)", float64(n)/ramp.Seconds()))
	s.add("ramp: create → first exec p50 / p99", createDur.pct(50), fmt.Sprintf("/ %.0f ms", createDur.pct(99)))

	sleepCtx(ctx, dc.Settle)
	after, err := readHostCounts(ctx, dc.HearthPID)
	if err != nil {
		return err
	}
	per := func(a, b int64) float64 { return float64(a-b) / float64(n) }
	allows := func(limit, used int64, perSB float64) float64 {
		if limit <= 0 || perSB <= 0 {
			return math.NaN()
		}
		return float64(limit-used) / perSB
	}
	memPer := per(before.memAvail, after.memAvail)
	s.add("MemAvailable before / with N", float64(before.memAvail>>20), fmt.Sprintf("/ %d MiB", after.memAvail>>20))
	s.add("host memory per idle sandbox", memPer/(1<<20), "MiB")
	s.add("file handles per sandbox (host)", per(after.files, before.files), "")
	s.add("tasks (threads, PIDs) per sandbox", per(after.tasks, before.tasks), "")
	if dc.HearthPID > 0 {
		s.add("hearth dev descriptors per sandbox", per(after.hearthFDs, before.hearthFDs), fmt.Sprintf("(limit %d)", after.fdsLimit))
	}
	// What each resource would allow, from its use before the ramp.
	s.add("would allow: memory (down to the reserve)", allows(before.memAvail-reserve, 0, memPer), "sandboxes")
	s.add("would allow: PIDs", allows(min(before.pidMax, before.threadsMax), before.tasks, per(after.tasks, before.tasks)), fmt.Sprintf("sandboxes (pid_max %d, threads-max %d)", before.pidMax, before.threadsMax))
	s.add("would allow: host file handles", allows(before.filesMax, before.files, per(after.files, before.files)), "sandboxes")
	if dc.HearthPID > 0 {
		s.add("would allow: hearth dev descriptors", allows(after.fdsLimit, before.hearthFDs, per(after.hearthFDs, before.hearthFDs)), "sandboxes")
	}
	if p, err := netip.ParsePrefix(dc.Pool); err == nil && p.Addr().Is4() {
		s.add("would allow: network slots (/30 each)", math.Pow(2, float64(32-p.Bits()))/4, "sandboxes ("+dc.Pool+")")
	}

	// Sustained: kill the oldest, create one, par at a time, bounded in time and count; the
	// count stays at the ramp's, which may be at a limit, so the kill comes first.
	var (
		done, errs, errsRow int
		sustained           samples
		sErr                error
	)
	sctx, scancel := context.WithTimeout(ctx, dc.Sustain)
	defer scancel()
	sstart := time.Now()
	_ = forEach(sctx, make([]struct{}, dc.Par), dc.Par, func(ctx context.Context, _ int, _ struct{}) error {
		for ctx.Err() == nil {
			mu.Lock()
			if done+errs >= dc.SustainMax || errsRow >= 5 {
				mu.Unlock()
				return nil
			}
			mu.Unlock()
			if old := live.popOldest(); old != nil {
				if err := e.kill(ctx, old.ID); err != nil {
					live.push(old) // left for the cleanup
				}
			}
			d, sb, err := createReady(ctx, e)
			if sb != nil {
				live.push(sb)
			}
			if ctx.Err() != nil {
				return nil // the phase ended mid-create: neither counted nor failed
			}
			mu.Lock()
			if err != nil {
				errs++
				errsRow++
				if sErr == nil {
					sErr = err
				}
			} else {
				done, errsRow = done+1, 0
				sustained = append(sustained, d)
			}
			mu.Unlock()
		}
		return nil
	})
	sdur := time.Since(sstart)
	s.add(fmt.Sprintf("sustained: creates/s (%d running, a kill before each create, %d at a time)", n, dc.Par), float64(done)/sdur.Seconds(),
		fmt.Sprintf("(%d creates in %.0f s)", done, sdur.Seconds()))
	s.add("sustained: create → first exec p50 / p99", sustained.pct(50), fmt.Sprintf("/ %.0f ms", sustained.pct(99)))
	s.add("sustained: failed creates", float64(errs), "")
	if sErr != nil {
		s.note("sustained: first error", oneLine(sErr.Error(), 120))
	}
	return nil
}

// memAvailable is the median of three reads of MemAvailable a second apart.
func memAvailable(ctx context.Context) (int64, error) {
	var v []float64
	for i := range 3 {
		if i > 0 {
			sleepCtx(ctx, time.Second)
		}
		m, err := meminfo("MemAvailable")
		if err != nil {
			return 0, err
		}
		v = append(v, float64(m))
	}
	return int64(median(v)), nil
}
