package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"golang.org/x/net/http/httpguts"
)

// mutationOutcome is what applying a mutation did besides changing headers: the changes
// Envoy ignores silently (warnings) and, when Envoy rejects the whole response, why.
type mutationOutcome struct {
	warnings []string
	err      error
}

func (o *mutationOutcome) warn(format string, args ...any) {
	o.warnings = append(o.warnings, fmt.Sprintf(format, args...))
}

// mutationAllowed applies Envoy's default HeaderMutationRules: x-envoy-* headers and the
// routing headers (host, :authority, :scheme, :method) may not be changed, and no system
// header (":"-prefixed) may be removed. Disallowed changes are ignored, not errors.
func mutationAllowed(name string, removing bool) bool {
	switch {
	case strings.HasPrefix(name, "x-envoy"):
		return false
	case name == "host" || name == ":authority" || name == ":scheme" || name == ":method":
		return false
	case removing && strings.HasPrefix(name, ":"):
		return false
	}
	return true
}

// appendMode resolves how a set_headers entry combines with existing values, as Envoy's
// ext_proc mutation code does: the deprecated `append` wins when present; otherwise a
// non-default append_action; otherwise the value overwrites (ext_proc's documented default).
type appendMode int

const (
	overwrite appendMode = iota
	appendValue
	addIfAbsent
	overwriteIfExists
)

func resolveAppend(option *corev3.HeaderValueOption) appendMode {
	if option.GetAppend() != nil {
		if option.GetAppend().GetValue() {
			return appendValue
		}
		return overwrite
	}
	switch option.GetAppendAction() {
	case corev3.HeaderValueOption_ADD_IF_ABSENT:
		return addIfAbsent
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		return overwriteIfExists
	}
	// APPEND_IF_EXISTS_OR_ADD is the enum's zero value: on the wire it cannot be told from
	// "not set", so Envoy treats it as the default, which overwrites.
	return overwrite
}

// applyHeaderMutation changes headers the way Envoy applies an ext_proc HeaderMutation:
// removals first, then sets. replacing is true under CONTINUE_AND_REPLACE, where Envoy
// also lets :method change.
func applyHeaderMutation(m *extprocv3.HeaderMutation, headers *headerList, replacing bool) mutationOutcome {
	var out mutationOutcome
	if m == nil {
		return out
	}
	for _, raw := range m.GetRemoveHeaders() {
		name := strings.ToLower(raw)
		if !httpguts.ValidHeaderFieldName(strings.TrimPrefix(name, ":")) {
			out.err = fmt.Errorf("remove_headers: invalid header name %q", raw)
			return out
		}
		if !mutationAllowed(name, true) {
			out.warn("remove_headers %q ignored: Envoy's mutation rules forbid it", name)
			continue
		}
		headers.remove(name)
	}
	for _, option := range m.GetSetHeaders() {
		if err := applySetHeader(option, headers, replacing, &out); err != nil {
			out.err = err
			return out
		}
	}
	return out
}

func applySetHeader(option *corev3.HeaderValueOption, headers *headerList, replacing bool, out *mutationOutcome) error {
	h := option.GetHeader()
	if h == nil {
		return nil
	}
	if h.GetValue() != "" && len(h.GetRawValue()) != 0 {
		return fmt.Errorf("set_headers %q: only one of value or raw_value may be set", h.GetKey())
	}
	// Envoy reads raw_value only: a header given in `value` is set to an empty string.
	value := string(h.GetRawValue())
	if h.GetValue() != "" {
		out.warn("set_headers %q uses value, which Envoy ignores (it reads raw_value): the header is set empty", h.GetKey())
	}
	name := strings.ToLower(h.GetKey())
	if !httpguts.ValidHeaderFieldName(strings.TrimPrefix(name, ":")) || !httpguts.ValidHeaderFieldValue(value) {
		return fmt.Errorf("set_headers: invalid header %q: %q", h.GetKey(), value)
	}
	if !mutationAllowed(name, false) && !(replacing && name == ":method") {
		out.warn("set_headers %q ignored: Envoy's mutation rules forbid it", name)
		return nil
	}
	if name == ":status" && !validStatus(value) {
		out.warn("set_headers :status %q ignored: not an HTTP status Envoy accepts", value)
		return nil
	}
	switch mode := resolveAppend(option); {
	case mode == appendValue:
		headers.add(name, value)
	case mode == addIfAbsent && !headers.has(name), mode == overwrite,
		mode == overwriteIfExists && headers.has(name):
		headers.set(name, value)
	}
	return nil
}

func validStatus(value string) bool {
	code, err := strconv.Atoi(value)
	return err == nil && code >= 200 && code <= 599
}

// applyBodyMutation returns the chunk (or whole body) after an ext_proc BodyMutation.
// streamed_response belongs to FULL_DUPLEX_STREAMED, which this driver does not replay.
func applyBodyMutation(m *extprocv3.BodyMutation, body []byte) ([]byte, error) {
	switch mutation := m.GetMutation().(type) {
	case nil:
		return body, nil
	case *extprocv3.BodyMutation_Body:
		return mutation.Body, nil
	case *extprocv3.BodyMutation_ClearBody:
		if mutation.ClearBody {
			return []byte{}, nil
		}
		return body, nil
	case *extprocv3.BodyMutation_StreamedResponse:
		return nil, errors.New("body_mutation.streamed_response is only valid in FULL_DUPLEX_STREAMED mode")
	}
	return nil, fmt.Errorf("unknown body mutation %T", m.GetMutation())
}
