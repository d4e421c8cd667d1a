package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ExtAuthzScenario is the file given to `envoy-driver ext-authz`.
type ExtAuthzScenario struct {
	Checks []Check `json:"checks"`
}

// Check is one HTTP request as the ext_authz filter sees it, and the filter's settings.
type Check struct {
	Name              string            `json:"name"`
	Method            string            `json:"method"`
	Path              string            `json:"path"`
	Authority         string            `json:"authority"`
	Scheme            string            `json:"scheme"`
	Protocol          string            `json:"protocol"`
	Headers           headerList        `json:"headers"`
	RawHeaders        bool              `json:"raw_headers"`
	Body              *string           `json:"body"`
	BodyBase64        *string           `json:"body_base64"`
	WithRequestBody   *BufferSettings   `json:"with_request_body"`
	EncodeRawHeaders  bool              `json:"encode_raw_headers"`
	ContextExtensions map[string]string `json:"context_extensions"`
	Source            PeerSpec          `json:"source"`
	Destination       PeerSpec          `json:"destination"`
}

// BufferSettings mirrors the filter's with_request_body.
type BufferSettings struct {
	MaxRequestBytes     int  `json:"max_request_bytes"`
	AllowPartialMessage bool `json:"allow_partial_message"`
	PackAsBytes         bool `json:"pack_as_bytes"`
}

// PeerSpec is a connection end: "host:port" and, under mTLS, the SPIFFE principal.
type PeerSpec struct {
	Address   string `json:"address"`
	Principal string `json:"principal"`
}

// CheckResult is one Check call: what was sent, what came back, and what it means.
type CheckResult struct {
	Name     string          `json:"name"`
	Request  json.RawMessage `json:"request"`
	Response json.RawMessage `json:"response"`
	Summary  *CheckSummary   `json:"summary"`
	// EnvoyStatus is set when Envoy answers the client itself without calling the server
	// (413 for a body over max_request_bytes without allow_partial_message).
	EnvoyStatus int      `json:"envoy_status"`
	Errors      []string `json:"errors"`
}

// CheckSummary decodes a CheckResponse into what Envoy does with it.
type CheckSummary struct {
	Allowed              bool           `json:"allowed"`
	GRPCCode             int            `json:"grpc_code"`
	GRPCMessage          string         `json:"grpc_message"`
	Kind                 string         `json:"kind"` // ok_response, denied_response, error_response or none
	UpstreamHeaders      []HeaderOption `json:"upstream_headers"`
	HeadersToRemove      []string       `json:"headers_to_remove"`
	ResponseHeadersToAdd []HeaderOption `json:"response_headers_to_add"`
	DeniedStatus         int            `json:"denied_status"`
	DeniedHeaders        []HeaderOption `json:"denied_headers"`
	DeniedBody           BodyView       `json:"denied_body"`
	DynamicMetadata      map[string]any `json:"dynamic_metadata"`
}

// HeaderOption is a HeaderValueOption made plain: append is null when not set.
type HeaderOption struct {
	Name         string `json:"name"`
	Value        string `json:"value"`
	Append       *bool  `json:"append"`
	AppendAction string `json:"append_action"`
}

// ExtAuthzReport is what `envoy-driver ext-authz` prints.
type ExtAuthzReport struct {
	Driver  string        `json:"driver"`
	Version string        `json:"version"`
	Target  string        `json:"target"`
	Seed    uint64        `json:"seed"`
	Checks  []CheckResult `json:"checks"`
}

func loadExtAuthzScenario(path string) (*ExtAuthzScenario, error) {
	var scenario ExtAuthzScenario
	if err := loadJSON(path, &scenario); err != nil {
		return nil, err
	}
	for i := range scenario.Checks {
		if err := scenario.Checks[i].applyDefaults(i); err != nil {
			return nil, err
		}
	}
	return &scenario, nil
}

func (c *Check) applyDefaults(index int) error {
	if c.Name == "" {
		c.Name = fmt.Sprintf("check-%d", index)
	}
	defaults := []struct {
		field *string
		value string
	}{
		{&c.Method, "POST"}, {&c.Path, "/v1/chat/completions"}, {&c.Authority, "api.openai.com"},
		{&c.Scheme, "http"}, {&c.Protocol, "HTTP/1.1"},
		{&c.Source.Address, "127.0.0.1:40000"}, {&c.Destination.Address, "127.0.0.1:8080"},
	}
	for _, d := range defaults {
		if *d.field == "" {
			*d.field = d.value
		}
	}
	if c.Body != nil && c.BodyBase64 != nil {
		return fmt.Errorf("check %q: give body or body_base64, not both", c.Name)
	}
	if c.WithRequestBody != nil && c.WithRequestBody.MaxRequestBytes <= 0 {
		c.WithRequestBody.MaxRequestBytes = 1 << 20 // Envoy's default buffer limit
	}
	_, err := c.body()
	return err
}

func (c *Check) body() ([]byte, error) {
	spec := MessageSpec{Body: c.Body, BodyBase64: c.BodyBase64}
	return spec.bodyBytes()
}

func runChecks(ctx context.Context, client authv3.AuthorizationClient, scenario *ExtAuthzScenario, seed uint64, timeout time.Duration) []CheckResult {
	results := make([]CheckResult, 0, len(scenario.Checks))
	for i := range scenario.Checks {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		results = append(results, runCheck(ctx, client, &scenario.Checks[i], rng, timeout))
	}
	return results
}

func runCheck(ctx context.Context, client authv3.AuthorizationClient, c *Check, rng *rand.Rand, timeout time.Duration) CheckResult {
	result := CheckResult{Name: c.Name, Request: json.RawMessage("null"), Response: json.RawMessage("null"),
		Errors: []string{}}
	request, envoyStatus, err := buildCheckRequest(c, rng)
	if err != nil {
		result.Errors = append(result.Errors, err.Error())
		return result
	}
	if envoyStatus != 0 {
		result.EnvoyStatus = envoyStatus
		return result
	}
	result.Request = protoJSON(request)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	response, err := client.Check(ctx, request)
	if err != nil {
		result.Errors = append(result.Errors, "Check failed (Envoy counts this as an error, not a deny): "+err.Error())
		return result
	}
	result.Response = protoJSON(response)
	result.Summary = summarize(response)
	return result
}

// buildCheckRequest builds the CheckRequest as Envoy's ext_authz filter does. A non-zero
// status means Envoy answers the client itself and makes no call.
func buildCheckRequest(c *Check, rng *rand.Rand) (*authv3.CheckRequest, int, error) {
	body, err := c.body()
	if err != nil {
		return nil, 0, err
	}
	headers := envoyRequestHeaders(requestLine{c.Method, c.Path, c.Authority, c.Scheme}, c.Headers,
		body, c.RawHeaders, newRequestID(rng))
	http := &authv3.AttributeContext_HttpRequest{
		Id:     strconv.FormatUint(rng.Uint64()>>1, 10), // Envoy's stream id, not x-request-id
		Method: c.Method, Path: c.Path, Host: c.Authority, Scheme: c.Scheme, Protocol: c.Protocol,
	}
	if b := c.WithRequestBody; b != nil {
		sent := body
		if len(body) > b.MaxRequestBytes {
			if !b.AllowPartialMessage {
				return nil, 413, nil
			}
			sent = body[:b.MaxRequestBytes]
		}
		// Envoy drops a client's copy of this header and sets its own.
		headers.set("x-envoy-auth-partial-body", strconv.FormatBool(len(sent) < len(body)))
		if b.PackAsBytes {
			http.RawBody = sent
		} else {
			http.Body = strings.ToValidUTF8(string(sent), "!")
		}
		http.Size = int64(len(sent))
	}
	if c.EncodeRawHeaders {
		http.HeaderMap = headers.toProto()
	} else {
		http.Headers = sanitizedMap(headers.joined())
	}
	source, err := peer(c.Source)
	if err != nil {
		return nil, 0, err
	}
	destination, err := peer(c.Destination)
	if err != nil {
		return nil, 0, err
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: source, Destination: destination,
		Request:           &authv3.AttributeContext_Request{Time: timestamppb.Now(), Http: http},
		ContextExtensions: c.ContextExtensions,
	}}, 0, nil
}

// sanitizedMap replaces bytes that are not UTF-8 with "!", as Envoy does for string fields.
func sanitizedMap(in map[string]string) map[string]string {
	out := make(map[string]string, len(in))
	for name, value := range in {
		out[name] = strings.ToValidUTF8(value, "!")
	}
	return out
}

func peer(spec PeerSpec) (*authv3.AttributeContext_Peer, error) {
	host, port, err := net.SplitHostPort(spec.Address)
	if err != nil {
		return nil, fmt.Errorf("peer address %q: %w", spec.Address, err)
	}
	portNumber, err := strconv.ParseUint(port, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("peer address %q: %w", spec.Address, err)
	}
	return &authv3.AttributeContext_Peer{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(portNumber)},
		}}},
		Principal: spec.Principal,
	}, nil
}

func summarize(response *authv3.CheckResponse) *CheckSummary {
	code := codes.Code(response.GetStatus().GetCode())
	s := &CheckSummary{
		Allowed: code == codes.OK, GRPCCode: int(code), GRPCMessage: response.GetStatus().GetMessage(),
		Kind: "none", UpstreamHeaders: []HeaderOption{}, HeadersToRemove: []string{},
		ResponseHeadersToAdd: []HeaderOption{}, DeniedHeaders: []HeaderOption{}, DeniedBody: viewBody(nil),
		DynamicMetadata: response.GetDynamicMetadata().AsMap(),
	}
	switch r := response.GetHttpResponse().(type) {
	case *authv3.CheckResponse_OkResponse:
		s.Kind = "ok_response"
		s.UpstreamHeaders = headerOptions(r.OkResponse.GetHeaders())
		s.HeadersToRemove = append(s.HeadersToRemove, r.OkResponse.GetHeadersToRemove()...)
		s.ResponseHeadersToAdd = headerOptions(r.OkResponse.GetResponseHeadersToAdd())
	case *authv3.CheckResponse_DeniedResponse:
		s.Kind = "denied_response"
		s.describeDenial(r.DeniedResponse)
	case *authv3.CheckResponse_ErrorResponse:
		s.Kind = "error_response"
		s.describeDenial(r.ErrorResponse)
	}
	if !s.Allowed && s.DeniedStatus == 0 {
		s.DeniedStatus = 403 // Envoy's default for a deny without a status
	}
	return s
}

func (s *CheckSummary) describeDenial(denied *authv3.DeniedHttpResponse) {
	s.DeniedStatus = int(denied.GetStatus().GetCode())
	s.DeniedHeaders = headerOptions(denied.GetHeaders())
	s.DeniedBody = viewBody([]byte(denied.GetBody()))
}

func headerOptions(options []*corev3.HeaderValueOption) []HeaderOption {
	out := make([]HeaderOption, 0, len(options))
	for _, option := range options {
		h := HeaderOption{Name: option.GetHeader().GetKey(), Value: option.GetHeader().GetValue(),
			AppendAction: option.GetAppendAction().String()}
		if raw := option.GetHeader().GetRawValue(); len(raw) > 0 {
			h.Value = string(raw)
		}
		if option.GetAppend() != nil {
			h.Append = ptr(option.GetAppend().GetValue())
		}
		out = append(out, h)
	}
	return out
}
