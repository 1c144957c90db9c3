package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// server is the PostgreSQL server tests use: external (dir == "") or started here.
type server struct {
	url   string   // maintenance database
	dir   string   // holds data/, the log and the socket
	bin   string   // directory of initdb and pg_ctl
	runAs []string // command prefix that runs as the postgres user, when we are root
}

// start uses the server in HEARTH_TEST_DATABASE_URL or starts one.
func start(ctx context.Context) (*server, error) {
	if u := os.Getenv(EnvURL); u != "" {
		return &server{url: u}, nil
	}
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hearth-pg-")
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir, bin: bin}
	if err := s.init(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// binDir finds the newest Debian-installed PostgreSQL, else the one pg_config names.
func binDir() (string, error) {
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(found, func(i, j int) bool { return pgVersion(found[i]) > pgVersion(found[j]) })
	if len(found) > 0 {
		return filepath.Dir(found[0]), nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("initdb not found in /usr/lib/postgresql/*/bin or pg_config --bindir (apt-get install -y postgresql)")
}

// pgVersion is the major version in /usr/lib/postgresql/<major>/bin/initdb.
func pgVersion(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

// init creates the cluster and starts it. PostgreSQL refuses to run as root, so as root the
// directory goes to the postgres user and the commands run through runuser.
func (s *server) init(ctx context.Context) error {
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root needs the postgres user to run PostgreSQL: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(s.dir, uid, gid); err != nil {
			return err
		}
		s.runAs = []string{"runuser", "-u", "postgres", "--"}
	}
	data := filepath.Join(s.dir, "data")
	if err := s.run(ctx, "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"); err != nil {
		return err
	}
	// Only a unix socket in our directory: no port to collide on, nothing reachable from
	// outside. Durability is pointless for a throwaway cluster, speed is not.
	opts := fmt.Sprintf("-c listen_addresses='' -k %s -c fsync=off -c synchronous_commit=off "+
		"-c full_page_writes=off -c max_connections=200", s.dir)
	if err := s.run(ctx, "pg_ctl", "-D", data, "-l", filepath.Join(s.dir, "log"), "-w", "-t", "60",
		"-o", opts, "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		return fmt.Errorf("%w\nserver log:\n%s", err, log)
	}
	s.url = "postgres://postgres@/postgres?sslmode=disable&host=" + url.QueryEscape(s.dir)
	return nil
}

// run runs one of the server's programs, as the postgres user when needed.
func (s *server) run(ctx context.Context, prog string, args ...string) error {
	argv := append(append(append([]string{}, s.runAs...), filepath.Join(s.bin, prog)), args...)
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
	}
	return nil
}

// stop stops a server started here and removes its directory.
func (s *server) stop() error {
	if s.dir == "" {
		return nil
	}
	err := s.run(context.Background(), "pg_ctl", "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "stop")
	return errors.Join(err, os.RemoveAll(s.dir))
}
