package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

func (r *run) requestPhase() {
	spec := &r.ex.Request
	body, _ := spec.bodyBytes() // validated when the scenario was loaded
	in := httpMessage{headers: r.requestHeaders(body), trailers: spec.Trailers.clone()}
	in.chunks = r.chunks(&spec.MessageSpec, body, &r.res.RequestChunkSizes)
	m := r.ex.ProcessingMode
	up := &r.res.Upstream
	var sent [][]byte
	d := &direction{
		name: "request", wire: requestWire,
		headerMode: m.RequestHeaderMode, bodyMode: m.RequestBodyMode, trailerMode: m.RequestTrailerMode,
		interrupted: func(int) bool { return false },
		forward:     func(h headerList) { up.Reached, up.Headers = true, h },
		deliver:     func(piece []byte) { sent = append(sent, piece) },
	}
	out := r.process(d, in)
	up.Body = viewBody(joinChunks(sent))
	if r.ended {
		// Headers (and streamed chunks) that already went on are followed by a reset.
		up.Reset = up.Reached
		return
	}
	up.Trailers = out.trailers
}

func (r *run) responsePhase() {
	spec := &r.ex.Response
	source := "upstream"
	if r.ex.Interrupt != nil && r.ex.Interrupt.BeforeResponseHeaders {
		// Envoy answers a reset before headers itself, and its reply passes the encoder filters.
		spec = &MessageSpec{Status: 503, Body: ptr(upstreamResetBody),
			Headers: headerList{{"content-length", strconv.Itoa(len(upstreamResetBody))}, {"content-type", "text/plain"}}}
		source = "envoy"
		r.res.Upstream.Reset = true
	}
	body, _ := spec.bodyBytes()
	in := httpMessage{headers: append(headerList{{":status", strconv.Itoa(spec.Status)}}, spec.Headers.clone()...),
		trailers: spec.Trailers.clone()}
	in.chunks = r.chunks(spec, body, &r.res.ResponseChunkSizes)
	m := r.ex.ProcessingMode
	client := &r.res.Client
	d := &direction{
		name: "response", wire: responseWire,
		headerMode: m.ResponseHeaderMode, bodyMode: m.ResponseBodyMode, trailerMode: m.ResponseTrailerMode,
		interrupted: r.interruptAfter(len(in.chunks)),
		forward: func(h headerList) {
			r.clientHasHeaders = true
			client.Source, client.Headers = source, h
			client.Status, _ = strconv.Atoi(headerValue(h, ":status"))
		},
		deliver: func(piece []byte) { client.Chunks = append(client.Chunks, viewBody(piece)) },
	}
	out := r.process(d, in)
	if r.clientHasHeaders {
		client.Body = viewBody(joinChunks(out.chunks))
		if !r.ended {
			client.Trailers = out.trailers
		}
	}
}

func ptr[T any](v T) *T { return &v }

// requestLine is what the client asked for, before any header.
type requestLine struct{ method, path, authority, scheme string }

func (r *run) requestHeaders(body []byte) headerList {
	spec := &r.ex.Request
	return envoyRequestHeaders(requestLine{spec.Method, spec.Path, spec.Authority, spec.Scheme},
		spec.Headers, body, spec.RawHeaders, newRequestID(r.rng))
}

// envoyRequestHeaders builds the header map Envoy's HTTP/1 codec and connection manager
// make: pseudo-headers first, then the client's, then what Envoy adds (x-forwarded-proto,
// x-request-id), unless the scenario asks for its headers alone (raw).
func envoyRequestHeaders(line requestLine, given headerList, body []byte, raw bool, requestID string) headerList {
	h := headerList{{":authority", line.authority}, {":path", line.path}, {":method", line.method},
		{":scheme", line.scheme}}
	if !raw && len(body) > 0 {
		if !given.has("content-type") {
			h.add("content-type", "application/json")
		}
		if !given.has("content-length") && !given.has("transfer-encoding") {
			h.add("content-length", strconv.Itoa(len(body)))
		}
	}
	h = append(h, given.clone()...)
	if !raw {
		if !given.has("x-forwarded-proto") {
			h.add("x-forwarded-proto", line.scheme)
		}
		if !given.has("x-request-id") {
			h.add("x-request-id", requestID)
		}
	}
	return h
}

// newRequestID is a version-4 UUID from the seeded generator, so runs repeat exactly.
func newRequestID(rng *rand.Rand) string {
	a, b := rng.Uint64(), rng.Uint64()
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", a>>32, (a>>16)&0xffff, a&0xfff,
		0x8000|(b>>48)&0x3fff, b&0xffffffffffff)
}

// chunks cuts the body as the network delivers it. Only STREAMED mode shows the cuts to
// the processor, but they also set when an interrupt happens in the other modes.
func (r *run) chunks(spec *MessageSpec, body []byte, sizes *[]int) [][]byte {
	chunks, _ := spec.givenChunks()
	if chunks == nil {
		var err error
		if chunks, err = splitBody(body, spec.Split, r.rng); err != nil {
			r.res.Errors = append(r.res.Errors, err.Error())
			chunks = [][]byte{body}
		}
	}
	chunks = dropEmpty(chunks)
	*sizes = chunkSizes(chunks)
	return chunks
}

func dropEmpty(chunks [][]byte) [][]byte {
	out := chunks[:0:0]
	for _, chunk := range chunks {
		if len(chunk) > 0 {
			out = append(out, chunk)
		}
	}
	return out
}

// interruptAfter returns the response direction's interrupt check for a body of n chunks.
func (r *run) interruptAfter(total int) func(int) bool {
	i := r.ex.Interrupt
	if i == nil || i.BeforeResponseHeaders {
		return func(int) bool { return false }
	}
	if i.AfterResponseChunks > total {
		r.warn("interrupt after %d response chunks never happens: the body has %d", i.AfterResponseChunks, total)
	}
	return func(n int) bool {
		if n != i.AfterResponseChunks {
			return false
		}
		r.interrupt()
		return true
	}
}

// interrupt is a reset of the HTTP stream: Envoy resets both sides and cancels the
// ext_proc stream (a gRPC cancel, which the server sees as CANCELLED).
func (r *run) interrupt() {
	r.ended, r.active = true, false
	r.res.Client.Reset, r.res.Upstream.Reset = true, true
	if r.streamOpen {
		r.p.cancel()
		r.streamOpen = false
		r.streamEnd = "cancelled"
	}
}

// process runs one direction through the filter in Envoy's order (headers, body, trailers)
// and returns what continues past it.
func (r *run) process(d *direction, in httpMessage) httpMessage {
	out := httpMessage{headers: in.headers.clone(), trailers: in.trailers.clone()}
	hasBody, hasTrailers := len(in.chunks) > 0, len(in.trailers) > 0
	if d.headerMode == "SEND" {
		answer := r.call(d.wire.headers(&extprocv3.HttpHeaders{Headers: out.headers.toProto(),
			EndOfStream: !hasBody && !hasTrailers}))
		if replaced, ok := r.headersAnswer(d, d.wire.headersResponse(answer).GetResponse(), &out); ok {
			d.forward(out.headers)
			out.chunks = [][]byte{replaced}
			d.deliver(replaced)
			return out
		}
	}
	if r.ended {
		return out
	}
	if hasBody && r.removesContentLength(d) {
		out.headers.remove("content-length")
	}
	if d.bodyMode == "BUFFERED" && hasBody {
		r.bufferedBody(d, in.chunks, hasTrailers, &out)
	} else {
		d.forward(out.headers)
		if !d.interrupted(0) {
			r.streamBody(d, in.chunks, hasTrailers, &out)
		}
	}
	if !r.ended && hasTrailers && d.trailerMode == "SEND" {
		answer := r.call(d.wire.trailers(&extprocv3.HttpTrailers{Trailers: out.trailers.toProto()}))
		r.noteMutation(applyHeaderMutation(d.wire.trailersResponse(answer).GetHeaderMutation(), &out.trailers, false))
	}
	return out
}

// headersAnswer applies a HeadersResponse; under CONTINUE_AND_REPLACE it returns the body
// that replaces the original one, which is then neither sent to the processor nor forwarded.
func (r *run) headersAnswer(d *direction, common *extprocv3.CommonResponse, out *httpMessage) ([]byte, bool) {
	if common == nil {
		return nil, false
	}
	replacing := common.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE
	r.noteMutation(applyHeaderMutation(common.GetHeaderMutation(), &out.headers, replacing))
	if r.ended || !replacing {
		if common.GetBodyMutation() != nil && !r.ended {
			r.warn("%s headers answer: body_mutation ignored without CONTINUE_AND_REPLACE", d.name)
		}
		return nil, false
	}
	body, err := applyBodyMutation(common.GetBodyMutation(), nil)
	if err != nil {
		r.fail(err.Error())
		return nil, false
	}
	return body, true // the rest of this direction is neither sent nor forwarded
}

// removesContentLength: Envoy drops content-length wherever a body mutation could not be
// matched by a header mutation (see ProcessingMode.BodySendMode in Envoy's API).
func (r *run) removesContentLength(d *direction) bool {
	if r.ex.AllowContentLengthHeader || r.ex.ObservabilityMode {
		return false
	}
	return d.bodyMode == "STREAMED" || (d.bodyMode == "BUFFERED" && d.headerMode == "SKIP")
}

// bufferedBody holds the body until its end, sends it in one message, then lets the
// headers (which the answer may still change) and the body continue.
func (r *run) bufferedBody(d *direction, chunks [][]byte, trailersFollow bool, out *httpMessage) {
	for n := range len(chunks) {
		if d.interrupted(n) {
			return
		}
	}
	body := joinChunks(chunks)
	answer := r.call(d.wire.body(&extprocv3.HttpBody{Body: body, EndOfStream: !trailersFollow}))
	if common := d.wire.bodyResponse(answer).GetResponse(); common != nil {
		body = r.bufferedAnswer(d, common, body, out)
	}
	if r.ended {
		return
	}
	d.forward(out.headers)
	out.chunks = [][]byte{body}
	d.deliver(body)
}

func (r *run) bufferedAnswer(d *direction, common *extprocv3.CommonResponse, body []byte, out *httpMessage) []byte {
	r.noteMutation(applyHeaderMutation(common.GetHeaderMutation(), &out.headers, false))
	if r.ended || common.GetBodyMutation() == nil {
		return body
	}
	mutated, err := applyBodyMutation(common.GetBodyMutation(), body)
	if err != nil {
		r.fail(err.Error())
		return body
	}
	declared, ok := out.headers.get("content-length")
	if ok && d.headerMode == "SEND" && declared != strconv.Itoa(len(mutated)) {
		// Envoy rejects the mutation and answers with a local reply (ProcessingMode docs).
		r.res.Errors = append(r.res.Errors, fmt.Sprintf(
			"%s body mutation rejected: content-length %s does not match the new body's %d bytes",
			d.name, declared, len(mutated)))
		r.active = false
		r.localReply(500, "")
		return body
	}
	return mutated
}

// streamBody sends each chunk as it arrives (STREAMED) or passes it untouched (NONE, or
// once the processor is out of the loop), and delivers what continues.
func (r *run) streamBody(d *direction, chunks [][]byte, trailersFollow bool, out *httpMessage) {
	for i, chunk := range chunks {
		piece := chunk
		if d.bodyMode == "STREAMED" {
			last := i == len(chunks)-1
			piece = r.streamedChunk(d, chunk, last && !trailersFollow)
		}
		if r.ended {
			return
		}
		out.chunks = append(out.chunks, piece)
		d.deliver(piece)
		if d.interrupted(i + 1) {
			return
		}
	}
	if d.bodyMode == "STREAMED" && len(chunks) > 0 && trailersFollow && d.trailerMode == "SKIP" {
		// The processor will not see the trailers: Envoy ends the body with an empty chunk.
		if piece := r.streamedChunk(d, nil, true); !r.ended && len(piece) > 0 {
			out.chunks = append(out.chunks, piece)
			d.deliver(piece)
		}
	}
}

func (r *run) streamedChunk(d *direction, chunk []byte, endOfStream bool) []byte {
	answer := r.call(d.wire.body(&extprocv3.HttpBody{Body: chunk, EndOfStream: endOfStream}))
	common := d.wire.bodyResponse(answer).GetResponse()
	if common == nil {
		return chunk
	}
	if len(common.GetHeaderMutation().GetSetHeaders())+len(common.GetHeaderMutation().GetRemoveHeaders()) > 0 {
		r.warn("%s body answer: header_mutation ignored in STREAMED mode (the headers already went on)", d.name)
	}
	piece, err := applyBodyMutation(common.GetBodyMutation(), chunk)
	if err != nil {
		r.fail(err.Error())
		return chunk
	}
	return piece
}
