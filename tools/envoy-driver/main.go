// Command envoy-driver plays Envoy's part against an ext_proc or gRPC ext_authz server.
//
// It is built from Envoy's own generated Go API (go-control-plane), so the wire format the
// server under test must speak is the one generated from Envoy's protos. It replays the
// exchanges of a scenario file and prints one JSON report on stdout; see README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const usage = `usage:
  envoy-driver ext-proc  --target HOST:PORT --scenario FILE.json [--seed N] [--timeout 5s]
  envoy-driver ext-authz --target HOST:PORT --scenario FILE.json [--seed N] [--timeout 5s]
`

// version is the hash of the sources the build script stamps in (-X main.version=...).
var version = "dev"

// errUsage makes the command exit with status 2, like flag's own errors.
var errUsage = errors.New("usage")

func main() {
	if err := execute(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "envoy-driver:", err)
		}
		os.Exit(2)
	}
}

type options struct {
	target, scenario string
	seed             uint64
	timeout          time.Duration
}

func execute(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	opts, err := parseOptions(args[0], args[1:], stderr)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(opts.target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	var report any
	switch args[0] {
	case "ext-proc":
		report, err = runExtProc(context.Background(), conn, opts)
	case "ext-authz":
		report, err = runExtAuthz(context.Background(), conn, opts)
	}
	if err != nil {
		return err
	}
	encoder := json.NewEncoder(stdout)
	encoder.SetIndent("", "  ")
	return encoder.Encode(report)
}

func parseOptions(command string, args []string, stderr io.Writer) (options, error) {
	if command != "ext-proc" && command != "ext-authz" {
		fmt.Fprint(stderr, usage)
		return options{}, errUsage
	}
	var opts options
	flags := flag.NewFlagSet(command, flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.StringVar(&opts.target, "target", "", "the server's host:port (plaintext gRPC)")
	flags.StringVar(&opts.scenario, "scenario", "", "the scenario file (JSON)")
	flags.Uint64Var(&opts.seed, "seed", uint64(time.Now().UnixNano()), "seed for chunk splits and ids")
	flags.DurationVar(&opts.timeout, "timeout", 5*time.Second, "how long to wait for each answer")
	if err := flags.Parse(args); err != nil {
		return options{}, errUsage
	}
	if opts.target == "" || opts.scenario == "" || flags.NArg() > 0 {
		fmt.Fprint(stderr, usage)
		return options{}, errUsage
	}
	return opts, nil
}

func runExtProc(ctx context.Context, conn *grpc.ClientConn, opts options) (*ExtProcReport, error) {
	scenario, err := loadExtProcScenario(opts.scenario)
	if err != nil {
		return nil, err
	}
	client := extprocv3.NewExternalProcessorClient(conn)
	report := &ExtProcReport{Driver: "envoy-driver", Version: version, Target: opts.target, Seed: opts.seed,
		Exchanges: []ExchangeResult{}}
	for i := range scenario.Exchanges {
		// One generator per exchange: adding an exchange does not move another's cuts.
		rng := rand.New(rand.NewPCG(opts.seed, uint64(i)))
		report.Exchanges = append(report.Exchanges, runExchange(ctx, client, &scenario.Exchanges[i], rng, opts.timeout))
	}
	return report, nil
}

func runExtAuthz(ctx context.Context, conn *grpc.ClientConn, opts options) (*ExtAuthzReport, error) {
	scenario, err := loadExtAuthzScenario(opts.scenario)
	if err != nil {
		return nil, err
	}
	client := authv3.NewAuthorizationClient(conn)
	return &ExtAuthzReport{Driver: "envoy-driver", Version: version, Target: opts.target, Seed: opts.seed,
		Checks: runChecks(ctx, client, scenario, opts.seed, opts.timeout)}, nil
}
