package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

func newSandboxCpCmd(f *cliClientFlags) *cobra.Command {
	var user string
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy a file into or out of a sandbox",
		Long: "Copies one file between this machine and a sandbox; exactly one of SRC and DST is " +
			"ID:/path. The file streams, so its size is not limited by memory. A DST that is a " +
			"directory (or ends in /) receives the file under its own name; - is stdin or stdout. " +
			"Write a local path that contains ':' as ./path. Files over 1 MiB show progress on " +
			"stderr when it is a terminal.\n\n" +
			"  hearth sandbox cp data.csv ID:/home/user/\n  hearth sandbox cp ID:/tmp/out.tar.gz .\n" + exitCodesHelp,
		Args: cliArgs(cobra.ExactArgs(2)),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			src, dst := parseCpArg(args[0]), parseCpArg(args[1])
			if (src.sandbox == "") == (dst.sandbox == "") {
				return usagef("exactly one of SRC and DST must be ID:/path, got %q and %q", args[0], args[1])
			}
			remote := src
			if remote.sandbox == "" {
				remote = dst
			}
			if remote.path == "" {
				return usagef("%s: no path after the sandbox ID", remote.sandbox)
			}
			sb, err := f.openRunning(cmd.Context(), remote.sandbox)
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			opts := &hearth.FileOptions{User: user}
			if src.sandbox == "" {
				err = upload(ctx, sb, src.path, dst.path, opts, cmd.InOrStdin(), cmd.ErrOrStderr())
			} else {
				err = download(ctx, sb, src.path, dst.path, opts, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			return ctxErr(ctx, err)
		}),
	}
	cmd.Flags().StringVarP(&user, "user", "u", "", "read and write files as this sandbox user (default: the sandbox's default user)")
	return cmd
}

// cpArg is one side of cp: a sandbox path when sandbox is set, else a local path.
type cpArg struct{ sandbox, path string }

// parseCpArg reads ID:/path. Only a prefix made of ID characters counts as a sandbox, so
// ./a:b and /x/a:b stay local.
func parseCpArg(s string) cpArg {
	id, p, ok := strings.Cut(s, ":")
	if !ok || id == "" || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return cpArg{path: s}
	}
	return cpArg{sandbox: id, path: p}
}

func upload(ctx context.Context, sb *hearth.Sandbox, local, remote string, opts *hearth.FileOptions, stdin io.Reader, stderr io.Writer) error {
	var (
		r    io.Reader = stdin
		size int64     = -1
	)
	if local != "-" {
		f, err := os.Open(local)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return usagef("%s is a directory; cp copies one file", local)
		}
		r, size = f, fi.Size()
	}
	if strings.HasSuffix(remote, "/") || isRemoteDir(ctx, sb, remote, opts) {
		if local == "-" {
			return usagef("%s is a directory: name the file to write stdin to", remote)
		}
		remote = path.Join(remote, filepath.Base(local))
	}
	p := newTransferProgress(stderr, filepath.Base(local), size)
	if p != nil {
		r = struct{ io.Reader }{p.tee(r)} // progress needs a plain reader; the upload is chunked
	}
	_, err := sb.Files.Write(ctx, remote, r, opts)
	if err == nil {
		p.finish()
	}
	return err
}

func isRemoteDir(ctx context.Context, sb *hearth.Sandbox, p string, opts *hearth.FileOptions) bool {
	st, err := sb.Files.Stat(ctx, p, opts)
	return err == nil && st.Type == hearth.EntryDir
}

func download(ctx context.Context, sb *hearth.Sandbox, remote, local string, opts *hearth.FileOptions, stdout, stderr io.Writer) error {
	st, err := sb.Files.Stat(ctx, remote, opts)
	if err != nil {
		return err
	}
	if st.Type == hearth.EntryDir {
		return usagef("%s is a directory in the sandbox; cp copies one file", remote)
	}
	r, err := sb.Files.Read(ctx, remote, opts)
	if err != nil {
		return err
	}
	defer r.Close()
	p := newTransferProgress(stderr, path.Base(remote), st.Size)
	src := p.tee(r)
	if local == "-" {
		if _, err := io.Copy(stdout, src); err != nil {
			return fmt.Errorf("copy %s to stdout: %w", remote, err)
		}
		p.finish()
		return nil
	}
	if fi, err := os.Stat(local); (err == nil && fi.IsDir()) || strings.HasSuffix(local, string(os.PathSeparator)) {
		local = filepath.Join(local, path.Base(remote))
	}
	if err := writeFileAtomic(local, src); err != nil {
		return err
	}
	p.finish()
	return nil
}

// writeFileAtomic streams r into a temporary file next to name and renames it over name when
// complete, so an interrupted copy never leaves a truncated file behind.
func writeFileAtomic(name string, r io.Reader) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".hearth-cp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}
