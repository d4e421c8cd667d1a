package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const sse = "data: {\"choices\":[{\"delta\":{\"content\":\"héllo\"}}]}\n\n" +
	"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n" +
	"data: [DONE]\n\n"

func chatExchange() Exchange {
	return Exchange{
		ProcessingMode: ProcessingMode{RequestBodyMode: "BUFFERED", ResponseBodyMode: "STREAMED"},
		Request: RequestSpec{MessageSpec: MessageSpec{
			Headers: headerList{{"x-budget-request-id", "req-1"}},
			Body:    ptr(`{"model":"gpt-4o","stream":true}`),
		}},
		Response: MessageSpec{
			Headers: headerList{{"content-type", "text/event-stream"}},
			Body:    ptr(sse), Split: SplitSpec{Chunks: 5},
			Trailers: headerList{{"x-upstream-done", "1"}},
		},
	}
}

func TestEnvoyOrderForBufferedRequestAndStreamedResponse(t *testing.T) {
	result, processor := replay(t, chatExchange(), continueAll)
	streams, _ := processor.streams(t, 1)
	got := kinds(streams[0])
	want := []string{"request_headers", "request_body", "response_headers",
		"response_body", "response_body", "response_body", "response_body", "response_body", "response_trailers"}
	if !slices.Equal(got, want) {
		t.Fatalf("sent %v, want %v", got, want)
	}
	if len(result.Errors) != 0 || result.Stream.End != "closed" {
		t.Fatalf("errors %v, stream %+v", result.Errors, result.Stream)
	}
	first := streams[0][0]
	if first.GetProtocolConfig().GetRequestBodyMode().String() != "BUFFERED" ||
		first.GetProtocolConfig().GetResponseBodyMode().String() != "STREAMED" {
		t.Errorf("protocol_config %v", first.GetProtocolConfig())
	}
	if streams[0][1].GetProtocolConfig() != nil {
		t.Error("protocol_config must be in the first message only")
	}
	headers := protoHeaders(first.GetRequestHeaders().GetHeaders())
	for name, value := range map[string]string{":method": "POST", ":path": "/v1/chat/completions",
		":authority": "api.openai.com", "content-type": "application/json", "content-length": "32",
		"x-budget-request-id": "req-1"} {
		if headers[name] != value {
			t.Errorf("request header %s = %q, want %q", name, headers[name], value)
		}
	}
	if first.GetRequestHeaders().GetEndOfStream() || !streams[0][1].GetRequestBody().GetEndOfStream() {
		t.Error("end_of_stream: want false on headers with a body, true on the buffered body")
	}
	for _, req := range streams[0][3:8] {
		if req.GetResponseBody().GetEndOfStream() {
			t.Error("no body chunk ends the stream when trailers follow")
		}
	}
	if result.Client.Body.Text == nil || *result.Client.Body.Text != sse || len(result.Client.Chunks) != 5 {
		t.Errorf("client body %+v in %d chunks", result.Client.Body, len(result.Client.Chunks))
	}
	if result.Client.Headers.has("content-length") || headerValue(result.Client.Trailers, "x-upstream-done") != "1" {
		t.Errorf("client headers %v, trailers %v", result.Client.Headers, result.Client.Trailers)
	}
}

func TestLastStreamedChunkEndsTheStreamWithoutTrailers(t *testing.T) {
	ex := chatExchange()
	ex.Response.Trailers = nil
	_, processor := replay(t, ex, continueAll)
	streams, _ := processor.streams(t, 1)
	last := streams[0][len(streams[0])-1]
	if !last.GetResponseBody().GetEndOfStream() {
		t.Fatalf("last message %v: want a response_body with end_of_stream", requestKind(last))
	}
}

func TestStreamedTrailersSkippedEndWithAnEmptyChunk(t *testing.T) {
	ex := chatExchange()
	ex.ProcessingMode.ResponseTrailerMode = "SKIP"
	result, processor := replay(t, ex, continueAll)
	streams, _ := processor.streams(t, 1)
	last := streams[0][len(streams[0])-1]
	if len(last.GetResponseBody().GetBody()) != 0 || !last.GetResponseBody().GetEndOfStream() {
		t.Fatalf("last message %v", last)
	}
	if headerValue(result.Client.Trailers, "x-upstream-done") != "1" {
		t.Error("trailers skipped by the processor still reach the client")
	}
}

// downgrade is a processor that rewrites the model, fixes content-length, and shouts the
// streamed response back in upper case.
func downgrade(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	switch {
	case req.GetRequestHeaders() != nil:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
				HeaderMutation: &extprocv3.HeaderMutation{
					SetHeaders: []*corev3.HeaderValueOption{rawHeader("x-budget-downgraded", "gpt-4o-mini"),
						rawHeader(":authority", "evil.example"), rawHeader("x-envoy-internal", "1")},
					RemoveHeaders: []string{"x-drop-me", ":path"},
				}}}}}, nil
	case req.GetRequestBody() != nil:
		body := bytes.Replace(req.GetRequestBody().GetBody(), []byte("gpt-4o"), []byte("gpt-4o-mini"), 1)
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
			RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
				HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
					rawHeader("content-length", strconv.Itoa(len(body)))}},
				BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: body}},
			}}}}, nil
	case req.GetResponseBody() != nil:
		upper := asciiUpper(req.GetResponseBody().GetBody())
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
				BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: upper}},
			}}}}, nil
	}
	return continueFor(req), nil
}

// asciiUpper upper-cases ASCII letters only, so that half a UTF-8 sequence stays as it is.
func asciiUpper(chunk []byte) []byte {
	out := bytes.Clone(chunk)
	for i, b := range out {
		if 'a' <= b && b <= 'z' {
			out[i] = b - 'a' + 'A'
		}
	}
	return out
}

func TestMutationsAreAppliedAsEnvoyWould(t *testing.T) {
	ex := chatExchange()
	ex.Request.Headers.add("x-drop-me", "1")
	ex.Response.Body = ptr("data: é\n\n")
	ex.Response.Split = SplitSpec{MaxChunkBytes: 1}
	result, _ := replay(t, ex, downgrade)
	if len(result.Errors) != 0 {
		t.Fatal(result.Errors)
	}
	up := result.Upstream
	if *up.Body.Text != `{"model":"gpt-4o-mini","stream":true}` || headerValue(up.Headers, "content-length") != "37" {
		t.Errorf("upstream body %q, content-length %q", *up.Body.Text, headerValue(up.Headers, "content-length"))
	}
	if headerValue(up.Headers, "x-budget-downgraded") != "gpt-4o-mini" || up.Headers.has("x-drop-me") {
		t.Errorf("upstream headers %v", up.Headers)
	}
	if headerValue(up.Headers, ":authority") != "api.openai.com" || up.Headers.has("x-envoy-internal") ||
		!up.Headers.has(":path") || len(result.Warnings) != 3 {
		t.Errorf("forbidden mutations must be ignored with a warning: %v, %v", up.Headers, result.Warnings)
	}
	// Every byte was a chunk, so "é" went out in two halves, each upper-cased on its own.
	if result.Client.Body.Size != len("data: é\n\n") || len(result.Client.Chunks) != result.Client.Body.Size {
		t.Errorf("client body %+v in %d chunks", result.Client.Body, len(result.Client.Chunks))
	}
	if !strings.HasPrefix(*result.Client.Chunks[0].Text, "D") || result.Client.Chunks[6].Text != nil {
		t.Errorf("chunks %+v", result.Client.Chunks[:8])
	}
}

func TestBufferedBodyMutationWithStaleContentLengthIsRejected(t *testing.T) {
	ex := chatExchange()
	stale := func(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
		if req.GetRequestBody() == nil {
			return continueFor(req), nil
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
			RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
				BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte("{}")}},
			}}}}, nil
	}
	result, _ := replay(t, ex, stale)
	if result.Upstream.Reached || result.Client.Status != 500 || result.Client.Source != "envoy" ||
		len(result.Errors) != 1 {
		t.Fatalf("upstream %+v, client %+v, errors %v", result.Upstream, result.Client, result.Errors)
	}
}

func TestImmediateResponseEndsTheExchange(t *testing.T) {
	deny := func(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
			ImmediateResponse: &extprocv3.ImmediateResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
				Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{rawHeader("content-type", "application/json")}},
				Body:    []byte(`{"error":"budget_exceeded"}`),
			}}}, nil
	}
	result, processor := replay(t, chatExchange(), deny)
	streams, _ := processor.streams(t, 1)
	if !slices.Equal(kinds(streams[0]), []string{"request_headers"}) || result.Upstream.Reached {
		t.Fatalf("sent %v, upstream %+v", kinds(streams[0]), result.Upstream)
	}
	c := result.Client
	if c.Source != "immediate_response" || c.Status != 429 || *c.Body.Text != `{"error":"budget_exceeded"}` ||
		headerValue(c.Headers, "content-type") != "application/json" || headerValue(c.Headers, "content-length") != "27" {
		t.Fatalf("client %+v", c)
	}
}

func TestClientGoingAwayCancelsTheStream(t *testing.T) {
	ex := chatExchange()
	ex.Interrupt = &Interrupt{By: "client", AfterResponseChunks: 2}
	result, processor := replay(t, ex, continueAll)
	streams, ends := processor.streams(t, 1)
	if status.Code(ends[0]) != codes.Canceled {
		t.Errorf("the server saw %v, want a cancel", ends[0])
	}
	if n := slices.Index(kinds(streams[0]), "response_body"); n < 0 || len(streams[0]) != n+2 {
		t.Errorf("sent %v: want two response_body chunks, then nothing", kinds(streams[0]))
	}
	if !result.Client.Reset || len(result.Client.Chunks) != 2 || result.Stream.End != "cancelled" {
		t.Errorf("client %+v, stream %+v", result.Client, result.Stream)
	}
	if result.Client.Body.Size != result.ResponseChunkSizes[0]+result.ResponseChunkSizes[1] {
		t.Errorf("client body %d bytes, chunks %v", result.Client.Body.Size, result.ResponseChunkSizes)
	}
}

func TestUpstreamResetBeforeHeadersIsEnvoys503(t *testing.T) {
	ex := chatExchange()
	ex.Interrupt = &Interrupt{By: "upstream", BeforeResponseHeaders: true}
	result, processor := replay(t, ex, continueAll)
	streams, _ := processor.streams(t, 1)
	headers := protoHeaders(streams[0][2].GetResponseHeaders().GetHeaders())
	if headers[":status"] != "503" || result.Client.Status != 503 || result.Client.Source != "envoy" ||
		!strings.HasPrefix(*result.Client.Body.Text, "upstream connect error") {
		t.Fatalf("processor saw %v; client %+v", headers, result.Client)
	}
}

func TestObservabilityModeDoesNotWait(t *testing.T) {
	ex := chatExchange()
	ex.ObservabilityMode = true
	silent := func(*extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) { return nil, nil }
	result, processor := replay(t, ex, silent)
	streams, _ := processor.streams(t, 1)
	if len(streams[0]) != 9 || !streams[0][8].GetObservabilityMode() || len(result.Errors) != 0 {
		t.Fatalf("sent %v, errors %v", kinds(streams[0]), result.Errors)
	}
	if *result.Client.Body.Text != sse || result.Stream.End != "closed" {
		t.Fatalf("client %+v, stream %+v", result.Client.Body, result.Stream)
	}
}

func TestProcessingFailure(t *testing.T) {
	broken := func(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
		if req.GetResponseBody() != nil {
			return nil, status.Error(codes.Internal, "boom")
		}
		return continueFor(req), nil
	}
	for _, allow := range []bool{false, true} {
		ex := chatExchange()
		ex.FailureModeAllow = allow
		result, _ := replay(t, ex, broken)
		if len(result.Errors) != 1 || result.Stream.End != "failed" || result.Stream.GRPCCode != "Internal" {
			t.Fatalf("allow=%v: errors %v, stream %+v", allow, result.Errors, result.Stream)
		}
		if allow != (*result.Client.Body.Text == sse) || allow == result.Client.Reset {
			t.Errorf("allow=%v: client %+v", allow, result.Client)
		}
	}
}

func TestServerClosingEarlyLetsTheExchangeGoOn(t *testing.T) {
	closing := func(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
		if req.GetRequestBody() != nil {
			return nil, errCloseStream
		}
		return continueFor(req), nil
	}
	result, processor := replay(t, chatExchange(), closing)
	streams, _ := processor.streams(t, 1)
	if len(streams[0]) != 2 || result.Stream.End != "server_closed_early" || len(result.Errors) != 0 {
		t.Fatalf("sent %v, stream %+v, errors %v", kinds(streams[0]), result.Stream, result.Errors)
	}
	if *result.Upstream.Body.Text != *chatExchange().Request.Body || *result.Client.Body.Text != sse {
		t.Fatal("the exchange must go on unprocessed")
	}
}

func TestSpuriousAnswerIsAFailure(t *testing.T) {
	wrong := func(*extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{}}}, nil
	}
	result, _ := replay(t, chatExchange(), wrong)
	if len(result.Errors) != 1 || !strings.Contains(result.Errors[0], "spurious") || result.Client.Status != 500 {
		t.Fatalf("errors %v, client %+v", result.Errors, result.Client)
	}
}

func TestCommandLine(t *testing.T) {
	processor := &fakeProcessor{handle: downgrade}
	conn := startServer(t, processor, nil)
	scenario := `{"exchanges": [{"name": "stream",
		"processing_mode": {"request_body_mode": "BUFFERED", "response_body_mode": "STREAMED"},
		"request": {"headers": {"x-budget-request-id": "r-9"}, "body": "{\"model\":\"gpt-4o\"}"},
		"response": {"headers": [["content-type", "text/event-stream"]],
			"chunks": ["data: {\"a\"", ":1}\n\n"]}}]}`
	path := filepath.Join(t.TempDir(), "scenario.json")
	if err := os.WriteFile(path, []byte(scenario), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := execute([]string{"ext-proc", "--target", conn.Target(), "--scenario", path, "--seed", "7"}, &stdout, &stderr)
	if err != nil {
		t.Fatal(err, stderr.String())
	}
	var report struct {
		Seed      uint64 `json:"seed"`
		Exchanges []struct {
			Sent     []map[string]any `json:"sent"`
			Upstream struct {
				Body struct{ Text string } `json:"body"`
			} `json:"upstream"`
			Client struct {
				Chunks []struct{ Text string } `json:"chunks"`
			} `json:"client"`
		} `json:"exchanges"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
		t.Fatal(err)
	}
	ex := report.Exchanges[0]
	if report.Seed != 7 || ex.Upstream.Body.Text != `{"model":"gpt-4o-mini"}` || len(ex.Client.Chunks) != 2 ||
		ex.Client.Chunks[0].Text != `DATA: {"A"` {
		t.Fatalf("report %s", stdout.String())
	}
	if _, ok := ex.Sent[0]["request_headers"]; !ok {
		t.Fatalf("sent[0] %v: want protojson with proto field names", ex.Sent[0])
	}
}

func TestScenarioErrorsAreReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scenario.json")
	_ = os.WriteFile(path, []byte(`{"exchanges": [{"processing_mode": {"response_body_mode": "FULL_DUPLEX_STREAMED"}}]}`), 0o600)
	var stdout, stderr bytes.Buffer
	err := execute([]string{"ext-proc", "--target", "127.0.0.1:1", "--scenario", path}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "response_body_mode") {
		t.Fatalf("err %v", err)
	}
	err = execute([]string{"nonsense"}, &stdout, &stderr)
	if !errors.Is(err, errUsage) {
		t.Fatalf("err %v", err)
	}
}

func TestUnreachableServerIsAFailure(t *testing.T) {
	ex := chatExchange()
	ex.applyDefaults(0)
	conn := startServer(t, nil, nil) // nothing registered: Process answers Unimplemented
	client := extprocv3.NewExternalProcessorClient(conn)
	result := runExchange(context.Background(), client, &ex, rand.New(rand.NewPCG(1, 1)), time.Second)
	if len(result.Errors) != 1 || result.Stream.GRPCCode != "Unimplemented" || result.Client.Status != 500 {
		t.Fatalf("errors %v, stream %+v, client %+v", result.Errors, result.Stream, result.Client)
	}
}

func TestSilentProcessorTimesOut(t *testing.T) {
	ex := chatExchange()
	ex.applyDefaults(0)
	silent := func(*extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) { return nil, nil }
	client := extprocv3.NewExternalProcessorClient(startServer(t, &fakeProcessor{handle: silent}, nil))
	result := runExchange(context.Background(), client, &ex, rand.New(rand.NewPCG(1, 1)), 50*time.Millisecond)
	if len(result.Errors) != 1 || !strings.Contains(result.Errors[0], "timeout") ||
		result.Client.Status != 500 || result.Upstream.Reached || result.Stream.End != "failed" {
		t.Fatalf("errors %v, client %+v, stream %+v", result.Errors, result.Client, result.Stream)
	}
}

func TestFailureInAStreamedRequestResetsTheUpstream(t *testing.T) {
	ex := chatExchange()
	ex.ProcessingMode.RequestBodyMode = "STREAMED"
	ex.Request.Split = SplitSpec{CutAt: []int{10}}
	calls := 0
	breakSecondChunk := func(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
		if req.GetRequestBody() != nil {
			if calls++; calls == 2 {
				return nil, status.Error(codes.Unavailable, "gone")
			}
		}
		return continueFor(req), nil
	}
	result, _ := replay(t, ex, breakSecondChunk)
	up := result.Upstream
	if !up.Reached || !up.Reset || up.Body.Size != 10 || up.Headers.has("content-length") {
		t.Fatalf("upstream %+v", up)
	}
	if result.Client.Status != 500 || result.Client.Source != "envoy" {
		t.Fatalf("client %+v", result.Client)
	}
}
