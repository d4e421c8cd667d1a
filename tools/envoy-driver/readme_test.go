package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// readmeScenarios returns the README's ext-proc examples: whole scenarios, and exchanges
// shown alone (one JSON value after another in a block). Report blocks are skipped.
func readmeScenarios(t *testing.T) []Exchange {
	t.Helper()
	text, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var exchanges []Exchange
	blocks := strings.Split(string(text), "```json\n")[1:]
	for _, block := range blocks {
		block = block[:strings.Index(block, "```")]
		if strings.Contains(block, `"driver"`) || strings.Contains(block, `"checks"`) {
			continue
		}
		decoder := json.NewDecoder(strings.NewReader(block))
		decoder.DisallowUnknownFields()
		for {
			var value struct {
				Exchange
				Exchanges []Exchange `json:"exchanges"`
			}
			err := decoder.Decode(&value)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("README example %q: %v", block, err)
			}
			if value.Exchanges != nil {
				exchanges = append(exchanges, value.Exchanges...)
			} else {
				exchanges = append(exchanges, value.Exchange)
			}
		}
	}
	return exchanges
}

func TestReadmeExamplesReplayCleanly(t *testing.T) {
	exchanges := readmeScenarios(t)
	if len(exchanges) < 9 {
		t.Fatalf("found %d README examples", len(exchanges))
	}
	processor := &fakeProcessor{handle: continueAll}
	client := extprocv3.NewExternalProcessorClient(startServer(t, processor, nil))
	for i, ex := range exchanges {
		ex.applyDefaults(i)
		if err := ex.validate(); err != nil {
			t.Fatal(err)
		}
		result := runExchange(context.Background(), client, &ex, rand.New(rand.NewPCG(1, uint64(i))), 2*time.Second)
		if len(result.Errors) != 0 || len(result.Warnings) != 0 {
			t.Errorf("%s: errors %v, warnings %v", ex.Name, result.Errors, result.Warnings)
		}
	}
}

func TestReadmeCheckExampleRuns(t *testing.T) {
	text, _ := os.ReadFile("README.md")
	start := bytes.Index(text, []byte("```json\n{\"checks\""))
	block := text[start+len("```json\n"):]
	block = block[:bytes.Index(block, []byte("```"))]
	path := t.TempDir() + "/checks.json"
	if err := os.WriteFile(path, block, 0o600); err != nil {
		t.Fatal(err)
	}
	scenario, err := loadExtAuthzScenario(path)
	if err != nil || len(scenario.Checks) != 2 {
		t.Fatalf("README check example: %v", err)
	}
}
