// Package hoststats reads the CPU, memory and disk figures envd reports on GET /metrics, in
// the units E2B's envd uses (bytes, MiB and percent).
package hoststats

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Metrics is the JSON body of GET /metrics.
type Metrics struct {
	Timestamp   int64   `json:"ts"`
	CPUCount    int     `json:"cpu_count"`
	CPUUsedPct  float64 `json:"cpu_used_pct"`
	MemTotal    uint64  `json:"mem_total"`
	MemUsed     uint64  `json:"mem_used"`
	MemCache    uint64  `json:"mem_cache"`
	MemTotalMiB uint64  `json:"mem_total_mib"`
	MemUsedMiB  uint64  `json:"mem_used_mib"`
	DiskUsed    uint64  `json:"disk_used"`
	DiskTotal   uint64  `json:"disk_total"`
}

// Sampler computes CPU use between successive calls, like a `top` refresh.
type Sampler struct {
	mu             sync.Mutex
	lastBusy, last uint64
	procRoot, disk string
}

// NewSampler reads /proc and the filesystem holding diskPath.
func NewSampler(diskPath string) *Sampler {
	return &Sampler{procRoot: "/proc", disk: diskPath}
}

// Read returns current figures. The first call samples CPU over 100 ms.
func (s *Sampler) Read() (Metrics, error) {
	m := Metrics{Timestamp: time.Now().Unix(), CPUCount: runtime.NumCPU()}
	pct, err := s.cpuPercent()
	if err != nil {
		return m, err
	}
	m.CPUUsedPct = pct
	if err := s.memory(&m); err != nil {
		return m, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.disk, &st); err != nil {
		return m, fmt.Errorf("statfs %s: %w", s.disk, err)
	}
	m.DiskTotal = st.Blocks * uint64(st.Bsize)
	m.DiskUsed = (st.Blocks - st.Bfree) * uint64(st.Bsize)
	return m, nil
}

func (s *Sampler) cpuPercent() (float64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	busy, total, err := s.cpuTimes()
	if err != nil {
		return 0, err
	}
	if s.last == 0 {
		time.Sleep(100 * time.Millisecond)
		s.lastBusy, s.last = busy, total
		if busy, total, err = s.cpuTimes(); err != nil {
			return 0, err
		}
	}
	if total <= s.last || busy < s.lastBusy {
		s.lastBusy, s.last = busy, total
		return 0, nil
	}
	dBusy, dTotal := busy-s.lastBusy, total-s.last
	s.lastBusy, s.last = busy, total
	return float64(int(float64(dBusy)/float64(dTotal)*10000)) / 100, nil
}

// cpuTimes sums the aggregate "cpu" line of /proc/stat; idle and iowait are not busy.
func (s *Sampler) cpuTimes() (busy, total uint64, err error) {
	data, err := os.ReadFile(s.procRoot + "/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("unexpected /proc/stat first line %q", line)
	}
	for i, f := range fields[1:] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse /proc/stat field %q: %w", f, err)
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}

func (s *Sampler) memory(m *Metrics) error {
	f, err := os.Open(s.procRoot + "/meminfo")
	if err != nil {
		return fmt.Errorf("read /proc/meminfo: %w", err)
	}
	defer f.Close()
	kv := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		kv[name] = v * 1024
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read /proc/meminfo: %w", err)
	}
	m.MemTotal = kv["MemTotal"]
	avail, ok := kv["MemAvailable"]
	if !ok {
		avail = kv["MemFree"] + kv["Buffers"] + kv["Cached"]
	}
	if avail < m.MemTotal {
		m.MemUsed = m.MemTotal - avail
	}
	m.MemCache = kv["Cached"] + kv["Buffers"]
	m.MemTotalMiB = m.MemTotal >> 20
	m.MemUsedMiB = m.MemUsed >> 20
	return nil
}
