package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one run measured; it is printed as a table and written as JSON so
// runs can be compared by tools as well as by eye.
type Report struct {
	Started  time.Time  `json:"started"`
	Duration string     `json:"duration"`
	Machine  Machine    `json:"machine"`
	Sections []*Section `json:"sections"`
}

// Machine describes how busy the host was, since every figure depends on it.
type Machine struct {
	CPUs          int    `json:"cpus"`
	LoadAvgBefore string `json:"loadavg_before"`
	LoadAvgAfter  string `json:"loadavg_after"`
	MemTotalMiB   int64  `json:"mem_total_mib"`
	// BusyPercent is the share of all CPUs busy during the run, from /proc/stat: the
	// benchmark's own load included, so compare it between runs, not with zero.
	BusyPercent float64 `json:"busy_percent"`
}

// Section is one measured topic: what it means, and its figures.
type Section struct {
	Name       string    `json:"name"`
	Definition string    `json:"definition"`
	Metrics    []*Metric `json:"metrics"`
	// Error is set when the section failed; its metrics so far are kept.
	Error string `json:"error,omitempty"`
}

// Metric is one figure. Value is nil when there is no number (Text says why).
type Metric struct {
	Name  string   `json:"name"`
	Value *float64 `json:"value"`
	Unit  string   `json:"unit"`
	Text  string   `json:"text,omitempty"`
}

// add records a figure; NaN becomes a missing value.
func (s *Section) add(name string, v float64, unit string) {
	m := &Metric{Name: name, Unit: unit}
	if !math.IsNaN(v) && !math.IsInf(v, 0) {
		m.Value = &v
	}
	s.Metrics = append(s.Metrics, m)
}

// note records a figure that is text, e.g. "not available: …".
func (s *Section) note(name, text string) {
	s.Metrics = append(s.Metrics, &Metric{Name: name, Text: text})
}

// Failed reports whether any section failed.
func (r *Report) Failed() bool {
	for _, s := range r.Sections {
		if s.Error != "" {
			return true
		}
	}
	return false
}

// WriteTable prints the figures, then the definitions, so the table stays narrow.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "Hearth benchmark, %s, %d CPUs, load average %s → %s, CPU busy %.0f%% during the run (%s)\n\n",
		r.Started.Format(time.RFC3339), r.Machine.CPUs, r.Machine.LoadAvgBefore, r.Machine.LoadAvgAfter,
		r.Machine.BusyPercent, r.Duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "section\tmeasurement\tvalue\tunit")
	fmt.Fprintln(tw, "-------\t-----------\t-----\t----")
	for _, s := range r.Sections {
		for _, m := range s.Metrics {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, m.Name, m.valueText(), m.Unit)
		}
		if s.Error != "" {
			fmt.Fprintf(tw, "%s\tFAILED (see below)\t\t\n", s.Name)
		}
	}
	tw.Flush()
	for _, s := range r.Sections {
		if s.Error != "" {
			fmt.Fprintf(w, "\n%s FAILED: %s\n", s.Name, oneLine(s.Error, 600))
		}
	}
	fmt.Fprintln(w, "\nDefinitions:")
	for _, s := range r.Sections {
		fmt.Fprintf(w, "  %s: %s\n", s.Name, s.Definition)
	}
}

func (m *Metric) valueText() string {
	switch {
	case m.Text != "":
		return m.Text
	case m.Value == nil:
		return "n/a"
	case *m.Value >= 100:
		return fmt.Sprintf("%.0f", *m.Value)
	case *m.Value >= 10:
		return fmt.Sprintf("%.1f", *m.Value)
	default:
		return fmt.Sprintf("%.2f", *m.Value)
	}
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// WriteJSON writes the report to path atomically (temp file, then rename).
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".hearth-bench-*.json")
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write report %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write report %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
