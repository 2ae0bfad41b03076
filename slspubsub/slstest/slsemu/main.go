// Command slsemu serves the slstest SLS emulator on a TCP address, for
// programs that cannot embed it (other languages, manual experiments).
//
//	go run ./slspubsub/slstest/slsemu -addr 127.0.0.1:9391 -logstore demo/app-log:4
//
// SDKs put the project in the host name ("<project>.<endpoint>"): point
// them at the printed endpoint through a client that connects to it whatever
// host it names, or resolve "*.<endpoint host>" to it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// logstoreFlags collects repeated -logstore project/name:shards values.
type logstoreFlags []logstoreSpec

type logstoreSpec struct {
	project, name string
	shards        int
}

func (f *logstoreFlags) String() string { return fmt.Sprint(*f) }

func (f *logstoreFlags) Set(v string) error {
	spec, err := parseLogstore(v)
	if err != nil {
		return err
	}
	*f = append(*f, spec)
	return nil
}

func parseLogstore(v string) (logstoreSpec, error) {
	path, shards := v, "2"
	if i := strings.LastIndexByte(v, ':'); i >= 0 {
		path, shards = v[:i], v[i+1:]
	}
	project, name, ok := strings.Cut(path, "/")
	n, err := strconv.Atoi(shards)
	if !ok || project == "" || name == "" || err != nil || n < 1 {
		return logstoreSpec{}, fmt.Errorf("logstore %q must look like project/name:shards", v)
	}
	return logstoreSpec{project, name, n}, nil
}

func main() {
	if err := run(os.Args[1:], os.Stdout, waitForSignal); err != nil {
		fmt.Fprintln(os.Stderr, "slsemu:", err)
		os.Exit(1)
	}
}

func waitForSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	<-ch
}

// run starts the emulator as the flags say, prints its endpoint, and serves
// until wait returns.
func run(args []string, out io.Writer, wait func()) error {
	fs := flag.NewFlagSet("slsemu", flag.ContinueOnError)
	fs.SetOutput(out)
	addr := fs.String("addr", "127.0.0.1:9391", "address to listen on")
	akID := fs.String("access-key-id", slstest.DefaultAccessKeyID, "AccessKeyId of the account the server accepts")
	akSecret := fs.String("access-key-secret", slstest.DefaultAccessKeySecret, "AccessKeySecret of that account")
	noAuth := fs.Bool("no-auth", false, "accept requests without checking signatures")
	seed := fs.Int64("seed", 1, "seed of the fault-injection random source")
	var stores logstoreFlags
	fs.Var(&stores, "logstore", "create `project/name:shards` at start (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	opts := []slstest.Option{slstest.WithAddr(*addr), slstest.WithSeed(*seed)}
	if *noAuth {
		opts = append(opts, slstest.WithoutAuth())
	} else {
		opts = append(opts, slstest.WithAccount(slstest.Account{AccessKeyID: *akID, AccessKeySecret: *akSecret}))
	}
	srv, err := slstest.NewServer(opts...)
	if err != nil {
		return err
	}
	defer srv.Close()
	for _, s := range stores {
		if err := srv.CreateLogStore(s.project, s.name, s.shards); err != nil {
			return fmt.Errorf("create logstore %s/%s: %w", s.project, s.name, err)
		}
		fmt.Fprintf(out, "logstore %s/%s with %d shards\n", s.project, s.name, s.shards)
	}
	// The secret is not printed: whoever started the command knows it.
	fmt.Fprintf(out, "slsemu: serving SLS on %s (endpoint %s, access key id %s)\n", srv.URL(), srv.Endpoint(), *akID)
	wait()
	return srv.Close()
}
