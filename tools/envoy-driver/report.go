package main

import (
	"encoding/base64"
	"encoding/json"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// BodyView shows bytes both ways: base64 always, text when they are valid UTF-8.
type BodyView struct {
	Size   int     `json:"size"`
	Base64 string  `json:"base64"`
	Text   *string `json:"text"`
}

func viewBody(data []byte) BodyView {
	view := BodyView{Size: len(data), Base64: base64.StdEncoding.EncodeToString(data)}
	if utf8.Valid(data) {
		text := string(data)
		view.Text = &text
	}
	return view
}

// protoJSON renders a message the way the Python protobuf runtime's MessageToDict does with
// preserving_proto_field_name=True, so tests can compare field names with the .proto files.
func protoJSON(message proto.Message) json.RawMessage {
	data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(message)
	if err != nil {
		data, _ = json.Marshal(map[string]string{"marshal_error": err.Error()})
	}
	return data
}

// ExtProcReport is what `envoy-driver ext-proc` prints.
type ExtProcReport struct {
	Driver    string           `json:"driver"`
	Version   string           `json:"version"`
	Target    string           `json:"target"`
	Seed      uint64           `json:"seed"`
	Exchanges []ExchangeResult `json:"exchanges"`
}

// ExchangeResult is one replayed exchange: the ext_proc conversation and its effects.
type ExchangeResult struct {
	Name               string            `json:"name"`
	Sent               []json.RawMessage `json:"sent"`
	Received           []json.RawMessage `json:"received"`
	RequestChunkSizes  []int             `json:"request_chunk_sizes"`
	ResponseChunkSizes []int             `json:"response_chunk_sizes"`
	Upstream           UpstreamView      `json:"upstream"`
	Client             ClientView        `json:"client"`
	Stream             StreamView        `json:"stream"`
	Warnings           []string          `json:"warnings"`
	Errors             []string          `json:"errors"`
}

// UpstreamView is what the provider would have received.
type UpstreamView struct {
	Reached  bool       `json:"reached"`
	Headers  headerList `json:"headers"`
	Body     BodyView   `json:"body"`
	Trailers headerList `json:"trailers"`
	Reset    bool       `json:"reset"`
}

// ClientView is what the downstream client would have received. Source says who answered:
// "upstream", "immediate_response" (the processor), or "envoy" (a local reply on failure).
type ClientView struct {
	Source   string     `json:"source"`
	Status   int        `json:"status"`
	Headers  headerList `json:"headers"`
	Body     BodyView   `json:"body"`
	Chunks   []BodyView `json:"chunks"`
	Trailers headerList `json:"trailers"`
	Reset    bool       `json:"reset"`
}

// StreamView is how the gRPC stream ended. End is one of: "closed" (the driver half-closed
// and the server finished), "server_closed_early" (the server ended it before the exchange
// was over; Envoy then goes on without it), "cancelled" (the driver cancelled it, as Envoy
// does when either side of the HTTP stream resets), "failed" (an error or a timeout).
type StreamView struct {
	End         string `json:"end"`
	GRPCCode    string `json:"grpc_code"`
	GRPCMessage string `json:"grpc_message"`
}

func newExchangeResult(name string) ExchangeResult {
	return ExchangeResult{
		Name: name, Sent: []json.RawMessage{}, Received: []json.RawMessage{},
		RequestChunkSizes: []int{}, ResponseChunkSizes: []int{},
		Upstream: UpstreamView{Headers: headerList{}, Trailers: headerList{}, Body: viewBody(nil)},
		Client: ClientView{Headers: headerList{}, Trailers: headerList{}, Chunks: []BodyView{},
			Body: viewBody(nil)},
		Warnings: []string{}, Errors: []string{},
	}
}
