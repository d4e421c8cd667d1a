package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// header is one HTTP header the way Envoy holds it: a lower-case name and the raw value.
type header struct {
	Name  string
	Value string
}

// headerList keeps order and repeats, as Envoy's header maps do. In JSON it is a list of
// [name, value] pairs; scenarios may also give an object {name: value}.
type headerList []header

func (h headerList) MarshalJSON() ([]byte, error) {
	pairs := make([][2]string, 0, len(h))
	for _, e := range h {
		pairs = append(pairs, [2]string{e.Name, e.Value})
	}
	return json.Marshal(pairs)
}

func (h *headerList) UnmarshalJSON(data []byte) error {
	*h = nil
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
		var object map[string]string
		if err := json.Unmarshal(data, &object); err != nil {
			return err
		}
		names := make([]string, 0, len(object))
		for name := range object {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			h.add(name, object[name])
		}
		return nil
	}
	var pairs [][]string
	if err := json.Unmarshal(data, &pairs); err != nil {
		return fmt.Errorf("headers: want [[name, value], ...] or {name: value}: %w", err)
	}
	for _, pair := range pairs {
		if len(pair) != 2 {
			return fmt.Errorf("headers: %q is not a [name, value] pair", pair)
		}
		h.add(pair[0], pair[1])
	}
	return nil
}

func (h headerList) get(name string) (string, bool) {
	name = strings.ToLower(name)
	for _, e := range h {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

func (h headerList) has(name string) bool {
	_, ok := h.get(name)
	return ok
}

func (h *headerList) add(name, value string) {
	*h = append(*h, header{Name: strings.ToLower(name), Value: value})
}

// set replaces every value of name by one, kept at the place of the first (Envoy's setCopy).
func (h *headerList) set(name, value string) {
	name = strings.ToLower(name)
	out := (*h)[:0:0]
	placed := false
	for _, e := range *h {
		if e.Name != name {
			out = append(out, e)
		} else if !placed {
			out = append(out, header{Name: name, Value: value})
			placed = true
		}
	}
	if !placed {
		out = append(out, header{Name: name, Value: value})
	}
	*h = out
}

func (h *headerList) remove(name string) {
	name = strings.ToLower(name)
	out := (*h)[:0:0]
	for _, e := range *h {
		if e.Name != name {
			out = append(out, e)
		}
	}
	*h = out
}

// clone copies the list with lower-case names, as Envoy holds them.
func (h headerList) clone() headerList {
	out := make(headerList, 0, len(h))
	for _, e := range h {
		out.add(e.Name, e.Value)
	}
	return out
}

// toProto encodes the headers as Envoy's ext_proc filter does: values in raw_value, not value.
func (h headerList) toProto() *corev3.HeaderMap {
	out := &corev3.HeaderMap{}
	for _, e := range h {
		out.Headers = append(out.Headers, &corev3.HeaderValue{Key: e.Name, RawValue: []byte(e.Value)})
	}
	return out
}

// joined is the map ext_authz sends: repeated headers joined with a comma.
func (h headerList) joined() map[string]string {
	out := map[string]string{}
	for _, e := range h {
		if previous, ok := out[e.Name]; ok {
			out[e.Name] = previous + "," + e.Value
		} else {
			out[e.Name] = e.Value
		}
	}
	return out
}
