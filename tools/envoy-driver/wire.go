package main

import (
	"context"
	"errors"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// wire builds the ProcessingRequest messages of one direction and reads the matching
// answers, so that the request and response phases share one implementation.
type wire struct {
	headers          func(*extprocv3.HttpHeaders) *extprocv3.ProcessingRequest
	body             func(*extprocv3.HttpBody) *extprocv3.ProcessingRequest
	trailers         func(*extprocv3.HttpTrailers) *extprocv3.ProcessingRequest
	headersResponse  func(*extprocv3.ProcessingResponse) *extprocv3.HeadersResponse
	bodyResponse     func(*extprocv3.ProcessingResponse) *extprocv3.BodyResponse
	trailersResponse func(*extprocv3.ProcessingResponse) *extprocv3.TrailersResponse
}

var requestWire = wire{
	headers: func(m *extprocv3.HttpHeaders) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: m}}
	},
	body: func(m *extprocv3.HttpBody) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: m}}
	},
	trailers: func(m *extprocv3.HttpTrailers) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: m}}
	},
	headersResponse:  (*extprocv3.ProcessingResponse).GetRequestHeaders,
	bodyResponse:     (*extprocv3.ProcessingResponse).GetRequestBody,
	trailersResponse: (*extprocv3.ProcessingResponse).GetRequestTrailers,
}

var responseWire = wire{
	headers: func(m *extprocv3.HttpHeaders) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: m}}
	},
	body: func(m *extprocv3.HttpBody) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: m}}
	},
	trailers: func(m *extprocv3.HttpTrailers) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: m}}
	},
	headersResponse:  (*extprocv3.ProcessingResponse).GetResponseHeaders,
	bodyResponse:     (*extprocv3.ProcessingResponse).GetResponseBody,
	trailersResponse: (*extprocv3.ProcessingResponse).GetResponseTrailers,
}

// requestKind and responseKind name the oneof case, as the .proto spells the field.
func requestKind(m *extprocv3.ProcessingRequest) string {
	switch m.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingRequest_RequestBody:
		return "request_body"
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return "request_trailers"
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingRequest_ResponseBody:
		return "response_body"
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return "response_trailers"
	}
	return "none"
}

func responseKind(m *extprocv3.ProcessingResponse) string {
	switch m.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingResponse_RequestBody:
		return "request_body"
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return "request_trailers"
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingResponse_ResponseBody:
		return "response_body"
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return "response_trailers"
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		return "immediate_response"
	case *extprocv3.ProcessingResponse_StreamedImmediateResponse:
		return "streamed_immediate_response"
	}
	return "none"
}

var errMessageTimeout = errors.New("no answer within the message timeout")

// procStream is one Process stream. A goroutine reads answers into a channel so that
// waiting for one can time out, as Envoy's message_timeout does.
type procStream struct {
	stream  extprocv3.ExternalProcessor_ProcessClient
	cancel  context.CancelFunc
	answers chan answer
	timeout time.Duration
}

type answer struct {
	message *extprocv3.ProcessingResponse
	err     error
}

func openStream(ctx context.Context, client extprocv3.ExternalProcessorClient, timeout time.Duration) (*procStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := client.Process(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	p := &procStream{stream: stream, cancel: cancel, answers: make(chan answer, 1024), timeout: timeout}
	go p.read()
	return p, nil
}

func (p *procStream) read() {
	for {
		message, err := p.stream.Recv()
		p.answers <- answer{message: message, err: err}
		if err != nil {
			return
		}
	}
}

// next waits for the next answer; io.EOF means the server ended the call with OK.
func (p *procStream) next() (*extprocv3.ProcessingResponse, error) {
	timer := time.NewTimer(p.timeout)
	defer timer.Stop()
	select {
	case a := <-p.answers:
		return a.message, a.err
	case <-timer.C:
		return nil, errMessageTimeout
	}
}
