package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
)

// ExtProcScenario is the file given to `envoy-driver ext-proc`: the HTTP exchanges to replay.
type ExtProcScenario struct {
	Exchanges []Exchange `json:"exchanges"`
}

// Exchange is one HTTP request and its response, as Envoy would see them, and how the
// ext_proc filter is configured for it.
type Exchange struct {
	Name              string         `json:"name"`
	ProcessingMode    ProcessingMode `json:"processing_mode"`
	ObservabilityMode bool           `json:"observability_mode"`
	FailureModeAllow  bool           `json:"failure_mode_allow"`
	// AllowContentLengthHeader is the filter's allow_content_length_header: Envoy then keeps
	// content-length where it would otherwise remove it after a possible body mutation.
	AllowContentLengthHeader bool        `json:"allow_content_length_header"`
	Request                  RequestSpec `json:"request"`
	Response                 MessageSpec `json:"response"`
	Interrupt                *Interrupt  `json:"interrupt"`
}

// ProcessingMode mirrors envoy.extensions.filters.http.ext_proc.v3.ProcessingMode, by enum name.
type ProcessingMode struct {
	RequestHeaderMode   string `json:"request_header_mode"`
	ResponseHeaderMode  string `json:"response_header_mode"`
	RequestBodyMode     string `json:"request_body_mode"`
	ResponseBodyMode    string `json:"response_body_mode"`
	RequestTrailerMode  string `json:"request_trailer_mode"`
	ResponseTrailerMode string `json:"response_trailer_mode"`
}

// MessageSpec is one direction of the exchange: headers, a body (whole or in chunks), trailers.
type MessageSpec struct {
	Status       int        `json:"status"` // response only; 200 when absent
	Headers      headerList `json:"headers"`
	Body         *string    `json:"body"`
	BodyBase64   *string    `json:"body_base64"`
	Chunks       []string   `json:"chunks"`
	ChunksBase64 []string   `json:"chunks_base64"`
	Split        SplitSpec  `json:"split"`
	Trailers     headerList `json:"trailers"`
}

// RequestSpec adds the request line to a MessageSpec.
type RequestSpec struct {
	MessageSpec
	Method    string `json:"method"`
	Path      string `json:"path"`
	Authority string `json:"authority"`
	Scheme    string `json:"scheme"`
	// RawHeaders sends exactly the given headers after the pseudo-headers: no content-type,
	// content-length, x-request-id or x-forwarded-proto added on Envoy's behalf.
	RawHeaders bool `json:"raw_headers"`
}

// SplitSpec says where a body is cut into the chunks Envoy receives from the network.
type SplitSpec struct {
	Chunks        int   `json:"chunks"`          // this many chunks (at most one per byte)
	MaxChunkBytes int   `json:"max_chunk_bytes"` // or chunks of random sizes up to this; 1 = every byte
	CutAt         []int `json:"cut_at"`          // or exactly these offsets
}

// Interrupt ends an exchange early, the two ways a stream breaks in production.
type Interrupt struct {
	By                    string `json:"by"` // "client" or "upstream"
	AfterResponseChunks   int    `json:"after_response_chunks"`
	BeforeResponseHeaders bool   `json:"before_response_headers"` // upstream only
}

// hasBody reports whether a body was given at all (an empty string is a body of 0 bytes).
func (m *MessageSpec) hasBody() bool {
	return m.Body != nil || m.BodyBase64 != nil || m.Chunks != nil || m.ChunksBase64 != nil
}

// givenChunks returns the chunks listed in the scenario, or nil when the body is given whole.
func (m *MessageSpec) givenChunks() ([][]byte, error) {
	if m.Chunks != nil {
		out := make([][]byte, len(m.Chunks))
		for i, chunk := range m.Chunks {
			out[i] = []byte(chunk)
		}
		return out, nil
	}
	if m.ChunksBase64 != nil {
		out := make([][]byte, len(m.ChunksBase64))
		for i, chunk := range m.ChunksBase64 {
			decoded, err := base64.StdEncoding.DecodeString(chunk)
			if err != nil {
				return nil, fmt.Errorf("chunks_base64[%d]: %w", i, err)
			}
			out[i] = decoded
		}
		return out, nil
	}
	return nil, nil
}

// bodyBytes returns the whole body, joined from its chunks when it is given in chunks.
func (m *MessageSpec) bodyBytes() ([]byte, error) {
	chunks, err := m.givenChunks()
	if err != nil {
		return nil, err
	}
	switch {
	case chunks != nil:
		return joinChunks(chunks), nil
	case m.Body != nil:
		return []byte(*m.Body), nil
	case m.BodyBase64 != nil:
		return base64.StdEncoding.DecodeString(*m.BodyBase64)
	}
	return nil, nil
}

func (m *MessageSpec) validate(where string) error {
	given := 0
	for _, set := range []bool{m.Body != nil, m.BodyBase64 != nil, m.Chunks != nil, m.ChunksBase64 != nil} {
		if set {
			given++
		}
	}
	if given > 1 {
		return fmt.Errorf("%s: give one of body, body_base64, chunks, chunks_base64", where)
	}
	if _, err := m.bodyBytes(); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

var headerModes = map[string]bool{"SEND": true, "SKIP": true}

// Body modes this driver replays. BUFFERED_PARTIAL, FULL_DUPLEX_STREAMED and GRPC are not
// replayed: the gateway's configuration does not use them.
var bodyModes = map[string]procmodev3.ProcessingMode_BodySendMode{
	"NONE":     procmodev3.ProcessingMode_NONE,
	"BUFFERED": procmodev3.ProcessingMode_BUFFERED,
	"STREAMED": procmodev3.ProcessingMode_STREAMED,
}

// applyDefaults fills the modes left out: Envoy's defaults (headers SEND, bodies NONE),
// except that trailers given in the scenario are sent (Envoy's default is SKIP).
func (ex *Exchange) applyDefaults(index int) {
	if ex.Name == "" {
		ex.Name = fmt.Sprintf("exchange-%d", index)
	}
	m := &ex.ProcessingMode
	defaultTo := func(field *string, value string) {
		if *field == "" {
			*field = value
		} else {
			*field = strings.ToUpper(*field)
		}
	}
	defaultTo(&m.RequestHeaderMode, "SEND")
	defaultTo(&m.ResponseHeaderMode, "SEND")
	defaultTo(&m.RequestBodyMode, "NONE")
	defaultTo(&m.ResponseBodyMode, "NONE")
	defaultTo(&m.RequestTrailerMode, sendWhen(len(ex.Request.Trailers) > 0))
	defaultTo(&m.ResponseTrailerMode, sendWhen(len(ex.Response.Trailers) > 0))
	r := &ex.Request
	defaultTo(&r.Method, "POST")
	defaultTo(&r.Scheme, "http")
	if r.Path == "" {
		r.Path = "/v1/chat/completions"
	}
	if r.Authority == "" {
		r.Authority = "api.openai.com"
	}
	if ex.Response.Status == 0 {
		ex.Response.Status = 200
	}
}

func sendWhen(given bool) string {
	if given {
		return "SEND"
	}
	return "SKIP"
}

func (ex *Exchange) validate() error {
	m := ex.ProcessingMode
	for name, value := range map[string]string{
		"request_header_mode": m.RequestHeaderMode, "response_header_mode": m.ResponseHeaderMode,
		"request_trailer_mode": m.RequestTrailerMode, "response_trailer_mode": m.ResponseTrailerMode,
	} {
		if !headerModes[value] {
			return fmt.Errorf("exchange %q: %s %q: want SEND or SKIP", ex.Name, name, value)
		}
	}
	for name, value := range map[string]string{
		"request_body_mode": m.RequestBodyMode, "response_body_mode": m.ResponseBodyMode,
	} {
		if _, ok := bodyModes[value]; !ok {
			return fmt.Errorf("exchange %q: %s %q: want NONE, BUFFERED or STREAMED", ex.Name, name, value)
		}
	}
	if err := ex.Request.validate("exchange " + ex.Name + " request"); err != nil {
		return err
	}
	if err := ex.Response.validate("exchange " + ex.Name + " response"); err != nil {
		return err
	}
	return ex.Interrupt.validate()
}

func (i *Interrupt) validate() error {
	if i == nil {
		return nil
	}
	switch {
	case i.By != "client" && i.By != "upstream":
		return fmt.Errorf("interrupt.by %q: want client or upstream", i.By)
	case i.BeforeResponseHeaders && i.By != "upstream":
		return errors.New("interrupt.before_response_headers: only the upstream can fail before headers")
	case i.AfterResponseChunks < 0:
		return errors.New("interrupt.after_response_chunks must be >= 0")
	}
	return nil
}

// loadJSON reads a scenario file strictly: an unknown field is a typo, not something to skip.
func loadJSON(path string, into any) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	decoder := json.NewDecoder(file)
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(into); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func loadExtProcScenario(path string) (*ExtProcScenario, error) {
	var scenario ExtProcScenario
	if err := loadJSON(path, &scenario); err != nil {
		return nil, err
	}
	for i := range scenario.Exchanges {
		ex := &scenario.Exchanges[i]
		ex.applyDefaults(i)
		if err := ex.validate(); err != nil {
			return nil, err
		}
	}
	return &scenario, nil
}
