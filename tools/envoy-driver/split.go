package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"unicode/utf8"
)

// defaultChunks is how many pieces a body is cut into when the scenario does not say.
const defaultChunks = 8

// splitBody cuts body into the chunks Envoy would receive from the network. Unless the
// scenario gives the offsets, the cuts are random (from rng) but always include, when the
// body has them and the chunk count allows, one cut inside a multi-byte UTF-8 sequence,
// one inside an SSE line and one inside a JSON document: the places a naive parser breaks.
func splitBody(body []byte, spec SplitSpec, rng *rand.Rand) ([][]byte, error) {
	if len(body) == 0 {
		return nil, nil
	}
	var cuts []int
	switch {
	case spec.CutAt != nil:
		cuts = slices.Clone(spec.CutAt)
		slices.Sort(cuts)
		cuts = slices.Compact(cuts)
		for _, cut := range cuts {
			if cut <= 0 || cut >= len(body) {
				return nil, fmt.Errorf("split.cut_at: %d is not inside a body of %d bytes", cut, len(body))
			}
		}
	case spec.MaxChunkBytes > 0:
		cuts = boundedCuts(len(body), spec.MaxChunkBytes, rng)
	default:
		count := spec.Chunks
		if count <= 0 {
			count = defaultChunks
		}
		cuts = randomCuts(body, min(count, len(body))-1, rng)
	}
	return cutAt(body, cuts), nil
}

// boundedCuts cuts after random lengths of 1..limit bytes.
func boundedCuts(size, limit int, rng *rand.Rand) []int {
	var cuts []int
	for at := 1 + rng.IntN(limit); at < size; at += 1 + rng.IntN(limit) {
		cuts = append(cuts, at)
	}
	return cuts
}

// randomCuts picks n distinct cut offsets in (0, len(body)), the tricky ones first.
func randomCuts(body []byte, n int, rng *rand.Rand) []int {
	chosen := map[int]bool{}
	for _, candidates := range [][]int{insideRunes(body), insideSSELines(body), insideJSON(body)} {
		if len(chosen) < n && len(candidates) > 0 {
			chosen[candidates[rng.IntN(len(candidates))]] = true
		}
	}
	for len(chosen) < n {
		chosen[1+rng.IntN(len(body)-1)] = true
	}
	cuts := make([]int, 0, n)
	for cut := range chosen {
		cuts = append(cuts, cut)
	}
	slices.Sort(cuts)
	return cuts
}

func cutAt(body []byte, cuts []int) [][]byte {
	chunks := make([][]byte, 0, len(cuts)+1)
	start := 0
	for _, cut := range cuts {
		chunks = append(chunks, body[start:cut])
		start = cut
	}
	return append(chunks, body[start:])
}

// insideRunes lists offsets that fall between the bytes of one multi-byte UTF-8 sequence.
func insideRunes(body []byte) []int {
	var offsets []int
	for i := 1; i < len(body); i++ {
		if !utf8.RuneStart(body[i]) {
			offsets = append(offsets, i)
		}
	}
	return offsets
}

// insideSSELines lists offsets strictly inside a "data:" line of a server-sent event stream.
func insideSSELines(body []byte) []int {
	var offsets []int
	for start := 0; start < len(body); {
		end := bytes.IndexByte(body[start:], '\n')
		if end < 0 {
			end = len(body)
		} else {
			end += start
		}
		if bytes.HasPrefix(body[start:end], []byte("data:")) {
			for i := start + 1; i < end; i++ {
				offsets = append(offsets, i)
			}
		}
		start = end + 1
	}
	return offsets
}

// insideJSON lists offsets strictly inside a JSON object or array (outside its strings'
// escapes, which a cut would not make any harder).
func insideJSON(body []byte) []int {
	var offsets []int
	depth, inString, escaped := 0, false, false
	for i, b := range body {
		if depth > 0 { // the previous byte is inside a document
			offsets = append(offsets, i)
		}
		switch {
		case escaped:
			escaped = false
		case inString && b == '\\':
			escaped = true
		case b == '"' && depth > 0:
			inString = !inString
		case inString:
		case b == '{' || b == '[':
			depth++
		case (b == '}' || b == ']') && depth > 0:
			depth--
		}
	}
	return offsets
}

func joinChunks(chunks [][]byte) []byte {
	return bytes.Join(chunks, nil)
}

func chunkSizes(chunks [][]byte) []int {
	sizes := make([]int, len(chunks))
	for i, chunk := range chunks {
		sizes[i] = len(chunk)
	}
	return sizes
}
