package main

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// cpuSnapshot is every process's CPU time at one instant, to tell who used the cores during
// a phase (the load generator, hearth, the sandboxes, other people's tests).
type cpuSnapshot struct {
	at    time.Time
	ticks map[int]procTicks
}

type procTicks struct {
	comm  string
	ticks uint64
}

func takeCPUSnapshot() cpuSnapshot {
	s := cpuSnapshot{at: time.Now(), ticks: map[int]procTicks{}}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid … utime(14) stime(15); comm may hold spaces.
		line := string(b)
		lp, rp := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
		if lp < 0 || rp < lp {
			continue
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(line[:lp]))
		f := strings.Fields(line[rp+1:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		s.ticks[pid] = procTicks{comm: line[lp+1 : rp], ticks: ut + st}
	}
	return s
}

// cpuShare is how many cores a group of processes used on average.
type cpuShare struct {
	Group string  `json:"group"`
	Cores float64 `json:"cores"`
}

// coresSince groups the CPU used between s and now by process name (runsc's sandbox
// processes share names, so they add up), largest first, dropping groups under 0.02 cores.
// self and child name this program and its load generator, whose names are the same.
func (s cpuSnapshot) coresSince(self, child int) []cpuShare {
	now := takeCPUSnapshot()
	secs := now.at.Sub(s.at).Seconds()
	by := map[string]uint64{}
	for pid, p := range now.ticks {
		d := p.ticks - s.ticks[pid].ticks
		if before, ok := s.ticks[pid]; !ok || before.ticks > p.ticks {
			d = p.ticks // started during the phase (a reused PID's count starts afresh)
		}
		name := p.comm
		if strings.HasPrefix(name, "kworker/") {
			// A kernel worker's name says which work queue it serves now, and changes with
			// it: one group for all of them.
			name = "kworker (kernel work queues)"
		}
		switch pid {
		case self:
			name = "bench (PTY client)"
		case child:
			name = "bench load generator"
		}
		by[name] += d
	}
	var out []cpuShare
	for g, t := range by {
		c := float64(t) / clockTicks / secs
		if c >= 0.02 {
			out = append(out, cpuShare{g, c})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cores > out[j].Cores })
	return out
}
