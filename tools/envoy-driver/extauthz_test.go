package main

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
)

func check(t *testing.T, c Check, answer *authv3.CheckResponse) (CheckResult, *authv3.CheckRequest) {
	t.Helper()
	if err := c.applyDefaults(0); err != nil {
		t.Fatal(err)
	}
	authorizer := &fakeAuthorizer{answer: answer}
	conn := startServer(t, nil, authorizer)
	result := runCheck(context.Background(), authv3.NewAuthorizationClient(conn), &c,
		rand.New(rand.NewPCG(1, 0)), 2*time.Second)
	return result, authorizer.last
}

func TestCheckRequestIsBuiltLikeEnvoys(t *testing.T) {
	c := Check{Path: "/v1/chat/completions?x=1", Authority: "llm.internal",
		Headers:         headerList{{"Authorization", "Bearer t"}, {"x-tag", "a"}, {"x-tag", "b"}},
		Body:            ptr("{\"model\":\"gpt-4o\"}"),
		WithRequestBody: &BufferSettings{MaxRequestBytes: 8},
		Source:          PeerSpec{Address: "10.1.2.3:5555", Principal: "spiffe://cluster.local/ns/a/sa/b"}}
	allow := &authv3.CheckResponse{Status: &rpcstatus.Status{}}
	c.WithRequestBody.AllowPartialMessage = true
	result, sent := check(t, c, allow)
	if len(result.Errors) != 0 || !result.Summary.Allowed {
		t.Fatalf("result %+v", result)
	}
	http := sent.GetAttributes().GetRequest().GetHttp()
	if http.GetPath() != "/v1/chat/completions?x=1" || http.GetHost() != "llm.internal" || http.GetMethod() != "POST" ||
		http.GetId() == "" || http.GetBody() != "{\"model\"" || http.GetSize() != 8 {
		t.Errorf("http %v", http)
	}
	for name, value := range map[string]string{"authorization": "Bearer t", "x-tag": "a,b",
		":path": "/v1/chat/completions?x=1", "x-envoy-auth-partial-body": "true"} {
		if http.GetHeaders()[name] != value {
			t.Errorf("header %s = %q, want %q", name, http.GetHeaders()[name], value)
		}
	}
	source := sent.GetAttributes().GetSource()
	if source.GetPrincipal() != "spiffe://cluster.local/ns/a/sa/b" ||
		source.GetAddress().GetSocketAddress().GetPortValue() != 5555 {
		t.Errorf("source %v", source)
	}
}

func TestBodyOverTheLimitIsEnvoys413(t *testing.T) {
	c := Check{Body: ptr("0123456789"), WithRequestBody: &BufferSettings{MaxRequestBytes: 4}}
	result, sent := check(t, c, &authv3.CheckResponse{})
	if result.EnvoyStatus != 413 || sent != nil {
		t.Fatalf("result %+v, sent %v", result, sent)
	}
}

func TestRawBodyAndRawHeaders(t *testing.T) {
	c := Check{BodyBase64: ptr("/w=="), WithRequestBody: &BufferSettings{PackAsBytes: true}, EncodeRawHeaders: true}
	_, sent := check(t, c, &authv3.CheckResponse{Status: &rpcstatus.Status{}})
	http := sent.GetAttributes().GetRequest().GetHttp()
	if string(http.GetRawBody()) != "\xff" || http.GetHeaders() != nil || len(http.GetHeaderMap().GetHeaders()) == 0 {
		t.Fatalf("http %v", http)
	}
}

func TestDenialIsSummarized(t *testing.T) {
	metadata, _ := structpb.NewStruct(map[string]any{"budget": "team-a", "estimate_usd": 0.25})
	deny := &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.ResourceExhausted), Message: "budget_exceeded"},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
			Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "retry-after", Value: "30"}}},
			Body:    `{"error":{"code":"budget_exceeded"}}`,
		}},
		DynamicMetadata: metadata,
	}
	result, _ := check(t, Check{}, deny)
	s := result.Summary
	if s.Allowed || s.GRPCCode != int(codes.ResourceExhausted) || s.DeniedStatus != 429 || s.Kind != "denied_response" ||
		s.DeniedHeaders[0].Value != "30" || *s.DeniedBody.Text != `{"error":{"code":"budget_exceeded"}}` ||
		s.DynamicMetadata["budget"] != "team-a" {
		t.Fatalf("summary %+v", s)
	}
}
