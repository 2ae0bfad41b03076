// Package pgcluster starts a throwaway PostgreSQL cluster from the system's binaries (initdb, pg_ctl): loopback
// TCP on a free port, its unix socket in a private directory, durability off, owned by the postgres OS user when
// run as root. Tests (through internal/testutil) and the examples use it when no DATABASE_URL is given. A
// watchdog process stops the cluster and removes its files when the starting process dies, however it dies.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Cluster is a throwaway PostgreSQL cluster started from the system's binaries, the Go twin of
// scripts/with-postgres.sh.
type Cluster struct {
	url     string // maintenance database, postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
	dir     string // holds data/, socket/, the logs; removed on stop
	pgCtl   string
	asUser  *user.User // non-nil when running as root: the cluster's programs run as this user via runuser
	runuser string     // path of runuser, when asUser is set

	// The watchdog is a shell process that blocks reading release, whose write end only we hold. Closing it (in
	// stop) or dying in any way makes the read return, and the watchdog stops the cluster and removes dir.
	watchdog *exec.Cmd
	release  *os.File
}

// StartupTimeout bounds initdb plus pg_ctl start; both take about a second on an idle machine, far longer on a
// loaded CI runner compiling many test binaries at once.
const StartupTimeout = 3 * time.Minute

// Start initializes and starts a cluster; Stop it when done. Its URL is the maintenance database of the
// superuser postgres, without a password (trust authentication on loopback).
func Start(ctx context.Context) (*Cluster, error) { return startLocalCluster(ctx) }

// URL returns the cluster's maintenance database URL,
// postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable.
func (c *Cluster) URL() string { return c.url }

// Stop stops the cluster and removes its files.
func (c *Cluster) Stop() error { return c.stop() }

func startLocalCluster(ctx context.Context) (*Cluster, error) {
	initdb, pgCtl, err := findPostgresBinaries()
	if err != nil {
		return nil, err
	}
	c := &Cluster{pgCtl: pgCtl}
	if os.Geteuid() == 0 {
		if c.runuser, err = sbinTool("runuser"); err != nil {
			return nil, fmt.Errorf("pgcluster: running as root needs runuser (util-linux) to start PostgreSQL as postgres: %w", err)
		}
		if c.asUser, err = postgresOSUser(ctx); err != nil {
			return nil, err
		}
	}
	if c.dir, err = c.makeDir(ctx); err != nil {
		return nil, err
	}
	if err := c.startWatchdog(); err != nil {
		_ = os.RemoveAll(c.dir)
		return nil, err
	}
	if err := c.initAndStart(ctx, initdb); err != nil {
		return nil, errors.Join(err, c.stop())
	}
	return c, nil
}

func (c *Cluster) initAndStart(ctx context.Context, initdb string) error {
	if err := c.run(ctx, "mkdir", "-m", "0700", c.path("socket")); err != nil {
		return err
	}
	if err := c.run(ctx, initdb, "-D", c.path("data"), "-A", "trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return err
	}
	// Settings go into postgresql.conf rather than on pg_ctl's -o line, which a shell re-parses.
	conf := fmt.Sprintf("\n# internal/pgcluster: a throwaway cluster\n"+
		"listen_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nmax_connections = 200\n"+
		"fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n", c.path("socket"))
	if err := appendFile(c.path("data", "postgresql.conf"), conf); err != nil {
		return err
	}
	// The free port may be taken by someone else before the postmaster binds it (other test binaries start
	// clusters at the same time); a failed start is retried on a new port.
	var errs []error
	for range 5 {
		port, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		err = c.run(ctx, c.pgCtl, "-D", c.path("data"), "-l", c.path("postgres.log"),
			"-o", "-p "+strconv.Itoa(port), "-w", "-t", "60", "start")
		if err == nil {
			c.url = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
			return nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	logTail, _ := os.ReadFile(c.path("postgres.log"))
	return fmt.Errorf("pgcluster: PostgreSQL did not start (server log: %s): %w", tail(logTail, 2000), errors.Join(errs...))
}

// stop ends the watchdog's wait and waits for it to stop the cluster and remove its files.
func (c *Cluster) stop() error {
	if err := c.release.Close(); err != nil {
		return fmt.Errorf("pgcluster: release PostgreSQL watchdog: %w", err)
	}
	if err := c.watchdog.Wait(); err != nil {
		return fmt.Errorf("pgcluster: stop PostgreSQL cluster in %s: %w", c.dir, err)
	}
	return nil
}

// watchdogScript stops the cluster and removes its directory once its standard input reaches end of file, that
// is once the test binary closed the pipe or died. Arguments: $1 the cluster directory, $2 pg_ctl, $3 runuser
// and $4 the user to run pg_ctl as (both empty: ourselves). It exits non-zero when pg_ctl could not stop the
// cluster.
const watchdogScript = `
read -r _ || :
status=0
if [ -f "$1/data/postmaster.pid" ]; then
	if [ -n "$4" ]; then
		"$3" -u "$4" -- "$2" -D "$1/data" -m immediate -w stop >/dev/null 2>&1 || status=$?
	else
		"$2" -D "$1/data" -m immediate -w stop >/dev/null 2>&1 || status=$?
	fi
fi
rm -rf "$1"
exit $status
`

func (c *Cluster) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pgcluster: PostgreSQL watchdog pipe: %w", err)
	}
	defer r.Close()
	owner := ""
	if c.asUser != nil {
		owner = c.asUser.Username
	}
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "wsls-pg-watchdog", c.dir, c.pgCtl, c.runuser, owner)
	cmd.Stdin = r
	cmd.Dir = "/"
	// Its own process group keeps a terminal's ^C (sent to the foreground group) from killing the watchdog
	// together with the test binary: it must outlive the binary to clean up after it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("pgcluster: start PostgreSQL watchdog: %w", err)
	}
	c.watchdog, c.release = cmd, w
	return nil
}

// makeDir creates the cluster's directory. As root it belongs to the postgres user, placed where that user can
// reach it: TMPDIR may lie under a directory only root may enter (say /root), /tmp never does.
func (c *Cluster) makeDir(ctx context.Context) (string, error) {
	bases := []string{os.TempDir()}
	if c.asUser != nil && bases[0] != "/tmp" {
		bases = append(bases, "/tmp")
	}
	var errs []error
	for _, base := range bases {
		dir, err := os.MkdirTemp(base, "wsls-pg-")
		if err != nil {
			errs = append(errs, fmt.Errorf("pgcluster: PostgreSQL cluster directory: %w", err))
			continue
		}
		if c.asUser == nil {
			return dir, nil
		}
		err = chownToUser(dir, c.asUser)
		if err == nil {
			err = runAs(ctx, c.runuser, c.asUser, dir, "test", "-w", dir)
		}
		if err == nil {
			return dir, nil
		}
		errs = append(errs, err)
		_ = os.RemoveAll(dir)
	}
	return "", errors.Join(errs...)
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

// run runs a program as the cluster's owner, in the cluster's directory so that PostgreSQL's programs never
// trip over a working directory their user cannot read.
func (c *Cluster) run(ctx context.Context, name string, args ...string) error {
	return runAs(ctx, c.runuser, c.asUser, c.dir, name, args...)
}

// runAs runs a program, as u through runuser when u is not nil, and returns its output in the error.
func runAs(ctx context.Context, runuser string, u *user.User, dir, name string, args ...string) error {
	if u != nil {
		args = append([]string{"-u", u.Username, "--", name}, args...)
		name = runuser
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgcluster: %s %s: %w: %s", name, strings.Join(args, " "), err, tail(out, 2000))
	}
	return nil
}

// findPostgresBinaries finds initdb and pg_ctl: in PATH when both are there, else in the newest
// /usr/lib/postgresql/<version>/bin (where Debian installs them; its /usr/bin holds only wrappers).
func findPostgresBinaries() (initdb, pgCtl string, err error) {
	initdb, errInit := exec.LookPath("initdb")
	pgCtl, errCtl := exec.LookPath("pg_ctl")
	if errInit == nil && errCtl == nil {
		return initdb, pgCtl, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(a)), filepath.Base(filepath.Dir(b)))
	})
	for _, dir := range slices.Backward(dirs) {
		initdb, pgCtl = filepath.Join(dir, "initdb"), filepath.Join(dir, "pg_ctl")
		if isExecutable(initdb) && isExecutable(pgCtl) {
			return initdb, pgCtl, nil
		}
	}
	return "", "", errors.New("pgcluster: DATABASE_URL is unset and PostgreSQL's server binaries (initdb, pg_ctl) " +
		"are not in PATH nor in /usr/lib/postgresql/*/bin: install PostgreSQL (Debian: apt-get install postgresql), " +
		"run the tests through `make test`, or set DATABASE_URL to a server where this user may create databases")
}

// compareVersions orders dotted version strings numerically ("9.6" < "15"); parts that are not numbers compare
// as 0.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// postgresOSUser returns the postgres OS user, creating it when missing: PostgreSQL refuses to run as root.
func postgresOSUser(ctx context.Context) (*user.User, error) {
	u, err := user.Lookup("postgres")
	if err == nil {
		return u, nil
	}
	useradd, err := sbinTool("useradd")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: no OS user postgres to own the test cluster, and no useradd to create it: %w", err)
	}
	out, err := exec.CommandContext(ctx, useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
		"--shell", "/usr/sbin/nologin", "postgres").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("pgcluster: create OS user postgres to own the test cluster: %w: %s", err, tail(out, 500))
	}
	u, err = user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: look up OS user postgres: %w", err)
	}
	return u, nil
}

// sbinTool finds an administrative tool, also when PATH lacks the sbin directories (as it often does for
// non-login shells).
func sbinTool(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err == nil {
		return path, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p, nil
		}
	}
	return "", err
}

func chownToUser(path string, u *user.User) error {
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return fmt.Errorf("pgcluster: uid of %s: %w", u.Username, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return fmt.Errorf("pgcluster: gid of %s: %w", u.Username, err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("pgcluster: give %s to %s: %w", path, u.Username, err)
	}
	return nil
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("pgcluster: append to %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pgcluster: append to %s: %w", path, err)
	}
	return nil
}

// freeLoopbackPort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last n bytes of a program's output, trimmed, for error messages.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
