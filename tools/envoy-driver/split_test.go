package main

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
	"unicode/utf8"
)

// cutsOf returns the offsets at which chunks were cut.
func cutsOf(chunks [][]byte) []int {
	var cuts []int
	at := 0
	for _, chunk := range chunks[:len(chunks)-1] {
		at += len(chunk)
		cuts = append(cuts, at)
	}
	return cuts
}

func TestSplitsLandInsideRunesSSELinesAndJSON(t *testing.T) {
	body := []byte(sse)
	for seed := range uint64(50) {
		chunks, err := splitBody(body, SplitSpec{Chunks: 4}, rand.New(rand.NewPCG(seed, 0)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(joinChunks(chunks), body) || len(chunks) != 4 {
			t.Fatalf("seed %d: %d chunks do not rejoin to the body", seed, len(chunks))
		}
		cuts := cutsOf(chunks)
		inRune := slices.ContainsFunc(cuts, func(c int) bool { return !utf8.RuneStart(body[c]) })
		inLine := slices.ContainsFunc(cuts, func(c int) bool { return slices.Contains(insideSSELines(body), c) })
		inJSON := slices.ContainsFunc(cuts, func(c int) bool { return slices.Contains(insideJSON(body), c) })
		if !inRune || !inLine || !inJSON {
			t.Fatalf("seed %d: cuts %v: inside a rune %v, an SSE line %v, JSON %v", seed, cuts, inRune, inLine, inJSON)
		}
	}
}

func TestSplitIsRepeatableBySeed(t *testing.T) {
	split := func(seed uint64) []int {
		chunks, _ := splitBody([]byte(sse), SplitSpec{}, rand.New(rand.NewPCG(seed, 3)))
		return cutsOf(chunks)
	}
	if !slices.Equal(split(9), split(9)) || slices.Equal(split(9), split(10)) {
		t.Fatal("the same seed must give the same cuts, another seed others")
	}
	if len(split(9)) != defaultChunks-1 {
		t.Fatalf("default split: %d cuts", len(split(9)))
	}
}

func TestSplitSpecs(t *testing.T) {
	body := []byte("héllo wörld")
	rng := rand.New(rand.NewPCG(1, 1))
	everyByte, _ := splitBody(body, SplitSpec{MaxChunkBytes: 1}, rng)
	if len(everyByte) != len(body) {
		t.Errorf("max_chunk_bytes 1: %d chunks for %d bytes", len(everyByte), len(body))
	}
	bounded, _ := splitBody(body, SplitSpec{MaxChunkBytes: 3}, rng)
	for _, chunk := range bounded {
		if len(chunk) > 3 || len(chunk) == 0 {
			t.Errorf("max_chunk_bytes 3: chunk of %d", len(chunk))
		}
	}
	exact, _ := splitBody(body, SplitSpec{CutAt: []int{2, 5}}, rng)
	if !slices.Equal(cutsOf(exact), []int{2, 5}) {
		t.Errorf("cut_at: %v", cutsOf(exact))
	}
	if _, err := splitBody(body, SplitSpec{CutAt: []int{0}}, rng); err == nil {
		t.Error("cut_at 0 is not inside the body")
	}
	many, _ := splitBody([]byte("ab"), SplitSpec{Chunks: 10}, rng)
	if len(many) != 2 {
		t.Errorf("a 2-byte body splits into at most 2 chunks, got %d", len(many))
	}
}
