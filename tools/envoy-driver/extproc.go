package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/status"
)

// Envoy's local reply when the upstream resets before sending response headers.
const upstreamResetBody = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"

// direction is one side of the HTTP exchange as the filter is configured for it.
type direction struct {
	name                              string // "request" or "response"
	wire                              wire
	headerMode, bodyMode, trailerMode string
	// interrupted is asked after n body chunks came from the network; true ends the exchange.
	interrupted func(n int) bool
	// forward receives the headers when they continue past the filter.
	forward func(headerList)
	// deliver receives each body piece that continues past the filter, in order.
	deliver func([]byte)
}

// httpMessage is one direction's headers, body (as network chunks) and trailers.
type httpMessage struct {
	headers  headerList
	chunks   [][]byte
	trailers headerList
}

// run replays one exchange. Envoy's filter state is kept in three flags: active (the
// processor is still in the loop), streamOpen (the gRPC stream has not been cancelled or
// failed) and ended (the HTTP exchange is over: immediate response, local reply, reset).
type run struct {
	ctx        context.Context
	client     extprocv3.ExternalProcessorClient
	ex         *Exchange
	rng        *rand.Rand
	timeout    time.Duration
	res        *ExchangeResult
	p          *procStream // nil until the first message is due
	active     bool
	streamOpen bool
	ended      bool
	streamEnd  string
	// clientHasHeaders: the response headers went downstream, so the answer can no
	// longer be replaced, only reset.
	clientHasHeaders bool
}

func runExchange(ctx context.Context, client extprocv3.ExternalProcessorClient, ex *Exchange, rng *rand.Rand, timeout time.Duration) ExchangeResult {
	result := newExchangeResult(ex.Name)
	r := &run{ctx: ctx, client: client, ex: ex, rng: rng, timeout: timeout, res: &result,
		active: true, streamEnd: "not_opened"}
	r.requestPhase()
	if !r.ended {
		r.responsePhase()
	}
	r.finish()
	return result
}

func (r *run) warn(format string, args ...any) {
	r.res.Warnings = append(r.res.Warnings, fmt.Sprintf(format, args...))
}

// call sends one message and, unless in observability mode, waits for its answer. It
// returns the answer only when it is the expected kind; every other outcome (the processor
// left, failed, or answered the client itself) is handled here and yields nil.
func (r *run) call(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	if !r.active || r.ended || !r.ensureStream() {
		return nil
	}
	if len(r.res.Sent) == 0 {
		req.ProtocolConfig = &extprocv3.ProtocolConfiguration{
			RequestBodyMode:  bodyModes[r.ex.ProcessingMode.RequestBodyMode],
			ResponseBodyMode: bodyModes[r.ex.ProcessingMode.ResponseBodyMode],
		}
	}
	req.ObservabilityMode = r.ex.ObservabilityMode
	r.res.Sent = append(r.res.Sent, protoJSON(req))
	if err := r.p.stream.Send(req); err != nil {
		// Send reports only that the stream is over; the reason comes from Recv.
		r.streamBroke(r.drainToError())
		return nil
	}
	if r.ex.ObservabilityMode {
		return nil
	}
	answer, err := r.p.next()
	if err != nil {
		r.streamBroke(err)
		return nil
	}
	return r.accept(answer, requestKind(req))
}

func (r *run) accept(answer *extprocv3.ProcessingResponse, want string) *extprocv3.ProcessingResponse {
	r.res.Received = append(r.res.Received, protoJSON(answer))
	if answer.GetModeOverride() != nil {
		r.warn("mode_override ignored: the filter runs with allow_mode_override: false")
	}
	if immediate := answer.GetImmediateResponse(); immediate != nil {
		r.immediateResponse(immediate)
		return nil
	}
	if got := responseKind(answer); got != want {
		r.fail(fmt.Sprintf("spurious message: got %s in answer to %s", got, want))
		return nil
	}
	return answer
}

func (r *run) ensureStream() bool {
	if r.streamOpen {
		return true
	}
	p, err := openStream(r.ctx, r.client, r.timeout)
	if err != nil {
		r.recordStatus(err)
		r.fail("opening the Process stream: " + err.Error())
		return false
	}
	r.p, r.streamOpen, r.streamEnd = p, true, "open"
	return true
}

func (r *run) drainToError() error {
	for {
		answer, err := r.p.next()
		if err != nil {
			return err
		}
		r.res.Received = append(r.res.Received, protoJSON(answer))
	}
}

// streamBroke handles the end of the stream in the middle of an exchange: a clean close
// lets Envoy go on without the processor; anything else is a processing failure.
func (r *run) streamBroke(err error) {
	if errors.Is(err, io.EOF) {
		r.active, r.streamOpen, r.streamEnd = false, false, "server_closed_early"
		r.res.Stream.GRPCCode = "OK"
		return
	}
	r.recordStatus(err)
	r.fail("processing failed: " + err.Error())
}

func (r *run) recordStatus(err error) {
	if s, ok := status.FromError(err); ok {
		r.res.Stream.GRPCCode, r.res.Stream.GRPCMessage = s.Code().String(), s.Message()
	}
}

// fail is Envoy's reaction to a processing error: the stream is reset; with
// failure_mode_allow the exchange goes on unprocessed, otherwise the client gets a 500.
func (r *run) fail(reason string) {
	r.res.Errors = append(r.res.Errors, reason)
	r.active = false
	if r.streamOpen {
		r.p.cancel()
		r.streamOpen = false
	}
	r.streamEnd = "failed"
	if !r.ex.FailureModeAllow {
		r.localReply(500, "")
	}
}

// localReply is an answer Envoy makes itself; after the response headers went to the
// client it can only reset the stream.
func (r *run) localReply(code int, body string) {
	r.ended = true
	if r.clientHasHeaders {
		r.res.Client.Reset = true
		return
	}
	headers := headerList{{":status", strconv.Itoa(code)}}
	if body != "" {
		headers.add("content-type", "text/plain")
	}
	headers.add("content-length", strconv.Itoa(len(body)))
	r.answerClient("envoy", headers, []byte(body))
}

func (r *run) immediateResponse(immediate *extprocv3.ImmediateResponse) {
	r.active = false
	r.ended = true
	if r.clientHasHeaders {
		r.warn("immediate_response after the response headers went to the client: Envoy can only reset the stream")
		r.res.Client.Reset = true
		return
	}
	code := int(immediate.GetStatus().GetCode())
	if code < 200 { // Envoy's isValidHttpStatus; an unset status answers 200
		code = 200
	}
	headers := headerList{{":status", strconv.Itoa(code)}}
	if len(immediate.GetBody()) > 0 {
		headers.add("content-type", "text/plain")
	}
	r.noteMutation(applyHeaderMutation(immediate.GetHeaders(), &headers, false))
	headers.set("content-length", strconv.Itoa(len(immediate.GetBody())))
	r.answerClient("immediate_response", headers, immediate.GetBody())
}

func (r *run) answerClient(source string, headers headerList, body []byte) {
	c := &r.res.Client
	c.Source, c.Headers, c.Body = source, headers, viewBody(body)
	c.Status, _ = strconv.Atoi(headerValue(headers, ":status"))
	c.Chunks = []BodyView{viewBody(body)}
}

func headerValue(h headerList, name string) string {
	value, _ := h.get(name)
	return value
}

// noteMutation records what a mutation did; an invalid one fails processing, as in Envoy.
func (r *run) noteMutation(outcome mutationOutcome) {
	r.res.Warnings = append(r.res.Warnings, outcome.warnings...)
	if outcome.err != nil {
		r.fail("invalid mutation: " + outcome.err.Error())
	}
}

func (r *run) finish() {
	r.res.Stream.End = r.streamEnd
	if !r.streamOpen {
		return
	}
	defer r.p.cancel()
	// Envoy half-closes once it has nothing more to send and lets the server end the call.
	_ = r.p.stream.CloseSend()
	answered := len(r.res.Received)
	err := r.drainToError()
	if extra := len(r.res.Received) - answered; extra > 0 && !r.ex.ObservabilityMode {
		r.warn("%d message(s) after the last answer, which Envoy ignores", extra)
	}
	switch {
	case errors.Is(err, io.EOF):
		r.res.Stream.End, r.res.Stream.GRPCCode = "closed", "OK"
	case errors.Is(err, errMessageTimeout):
		r.warn("the server did not end the call within the timeout after the half-close; the driver cancelled it")
		r.res.Stream.End = "cancelled"
	default:
		s, _ := status.FromError(err)
		r.res.Stream.End, r.res.Stream.GRPCCode, r.res.Stream.GRPCMessage = "closed", s.Code().String(), s.Message()
	}
}
