package main

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// handler answers one ProcessingRequest: nil sends nothing; errCloseStream ends the call
// with OK, any other error ends it with that error.
type handler func(*extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error)

var errCloseStream = errors.New("close the stream")

// fakeProcessor is an ExternalProcessor built from the same generated types, recording
// what each stream received and how it ended.
type fakeProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
	handle handler

	mu       sync.Mutex
	received [][]*extprocv3.ProcessingRequest
	ends     []error
}

func (f *fakeProcessor) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	var got []*extprocv3.ProcessingRequest
	end := f.serve(stream, &got)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.received = append(f.received, got)
	f.ends = append(f.ends, end)
	if errors.Is(end, errCloseStream) || errors.Is(end, io.EOF) {
		return nil
	}
	return end
}

func (f *fakeProcessor) serve(stream extprocv3.ExternalProcessor_ProcessServer, got *[]*extprocv3.ProcessingRequest) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		*got = append(*got, req)
		answer, err := f.handle(req)
		if err != nil {
			return err
		}
		if answer != nil {
			if err := stream.Send(answer); err != nil {
				return err
			}
		}
	}
}

// streams waits until n streams have ended (the driver may return before the server's
// side of a cancelled stream is done) and returns what they received.
func (f *fakeProcessor) streams(t *testing.T, n int) ([][]*extprocv3.ProcessingRequest, []error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		if len(f.received) >= n {
			defer f.mu.Unlock()
			return f.received, f.ends
		}
		f.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("%d stream(s) ended, want %d", len(f.received), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeAuthorizer answers Check with a fixed response and keeps the last request.
type fakeAuthorizer struct {
	authv3.UnimplementedAuthorizationServer
	answer *authv3.CheckResponse
	mu     sync.Mutex
	last   *authv3.CheckRequest
}

func (a *fakeAuthorizer) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last = req
	return a.answer, nil
}

// startServer serves both fakes on a loopback port and returns a connection to it.
func startServer(t *testing.T, processor *fakeProcessor, authorizer *fakeAuthorizer) *grpc.ClientConn {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	if processor != nil {
		extprocv3.RegisterExternalProcessorServer(server, processor)
	}
	if authorizer != nil {
		authv3.RegisterAuthorizationServer(server, authorizer)
	}
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	conn, err := grpc.NewClient(listener.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// replay runs one exchange against a fake processor answering with handle.
func replay(t *testing.T, ex Exchange, handle handler) (ExchangeResult, *fakeProcessor) {
	t.Helper()
	ex.applyDefaults(0)
	if err := ex.validate(); err != nil {
		t.Fatal(err)
	}
	processor := &fakeProcessor{handle: handle}
	conn := startServer(t, processor, nil)
	client := extprocv3.NewExternalProcessorClient(conn)
	rng := rand.New(rand.NewPCG(42, 0))
	return runExchange(context.Background(), client, &ex, rng, 2*time.Second), processor
}

// continueAll answers every message with an empty answer of the matching kind.
func continueAll(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	return continueFor(req), nil
}

func continueFor(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	empty := &extprocv3.HeadersResponse{}
	body := &extprocv3.BodyResponse{}
	trailers := &extprocv3.TrailersResponse{}
	switch req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: empty}}
	case *extprocv3.ProcessingRequest_RequestBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: body}}
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: trailers}}
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: empty}}
	case *extprocv3.ProcessingRequest_ResponseBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: body}}
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: trailers}}
	}
	return nil
}

func kinds(requests []*extprocv3.ProcessingRequest) []string {
	out := make([]string, len(requests))
	for i, req := range requests {
		out[i] = requestKind(req)
	}
	return out
}

func protoHeaders(m *corev3.HeaderMap) map[string]string {
	out := map[string]string{}
	for _, h := range m.GetHeaders() {
		out[h.GetKey()] = string(h.GetRawValue())
	}
	return out
}

func rawHeader(key, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, RawValue: []byte(value)}}
}
