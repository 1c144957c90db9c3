package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hearthsh/hearth/internal/uffd"
)

func init() {
	var (
		cfg      uffd.Config
		chunk    string
		verbose  bool
		sessions int
	)
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Serve a snapshot's guest memory to Firecracker over userfaultfd",
		Long: "Listens on --socket for Firecracker's Uffd memory backend (snapshot/load with " +
			"mem_backend {backend_type: \"Uffd\", backend_path: SOCKET}) and serves page faults " +
			"from --mem-file, a --chunk-size block per fault. By default it serves one VM and exits " +
			"when that VM exits or unmaps its memory; --sessions 0 serves any number until SIGTERM. " +
			"If it cannot serve a VM it kills it (a VM waiting on a fault nobody answers hangs " +
			"forever) and exits non-zero.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			size, err := parseSize(chunk)
			if err != nil {
				return fmt.Errorf("--chunk-size: %w", err)
			}
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			cfg.ChunkSize = size
			cfg.MaxSessions = sessions
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv, err := uffd.NewServer(cfg)
			if err != nil {
				return err
			}
			return srv.Serve(ctx)
		},
	}
	f := serve.Flags()
	f.StringVar(&cfg.SocketPath, "socket", "", "Unix socket Firecracker connects to (required)")
	f.StringVar(&cfg.MemFile, "mem-file", "", "snapshot memory file to serve (required)")
	f.StringVar(&chunk, "chunk-size", "2MiB", "aligned block populated per fault: a power of two such as 4KiB, 64KiB, 2MiB")
	f.IntVar(&sessions, "sessions", 1, "VMs to serve before exiting; 0 serves until SIGTERM")
	f.BoolVar(&verbose, "verbose", false, "log debug messages (every remove, unmap, remap and fork event)")
	_ = serve.MarkFlagRequired("socket")
	_ = serve.MarkFlagRequired("mem-file")

	cmd := &cobra.Command{
		Use:   "uffd",
		Short: "userfaultfd memory server for Firecracker snapshot restores",
	}
	cmd.AddCommand(serve)
	rootCmd.AddCommand(cmd)
}

// parseSize reads a byte count written as a plain number or with a KiB, MiB or GiB suffix.
func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	num := strings.TrimSpace(s)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSuffix(num, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
	if err != nil || n == 0 || n > ^uint64(0)/mult {
		return 0, fmt.Errorf("%q is not a size like 4096, 64KiB or 2MiB", s)
	}
	return n * mult, nil
}
