// Package apitest is a stand-in for Firecracker's API server that enforces the contract
// Hearth relies on: it validates every request's method, path and body against Hearth's
// own JSON Schema transcription of Firecracker's API (schema/, see its README), answers
// the way Firecracker does (204, 200 with JSON, or 400 with fault_message), keeps enough
// VM state to refuse calls Firecracker would refuse (configuring after boot, a snapshot of
// a running VM), and records every call in order. Tests of the client and of the driver
// run against it; the driver's tests also run it inside a fake firecracker process.
package apitest

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed schema/*.json
var schemaFS embed.FS

// schemaBase is the URL the schemas are registered under, so their relative $refs resolve
// among themselves and nothing is ever fetched.
const schemaBase = "https://schemas.hearth.invalid/firecracker/"

// contract is the compiled route table: "METHOD /path" (with {id} for one segment) to the
// schema of its body, nil for a call without a body.
type contract struct {
	routes map[string]*jsonschema.Schema
}

var (
	loadOnce sync.Once
	loaded   *contract
	loadErr  error
)

func theContract() (*contract, error) {
	loadOnce.Do(func() { loaded, loadErr = compileContract() })
	return loaded, loadErr
}

func compileContract() (*contract, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	ents, err := schemaFS.ReadDir("schema")
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.Name() == "routes.json" {
			continue
		}
		b, err := schemaFS.ReadFile(path.Join("schema", e.Name()))
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", e.Name(), err)
		}
		if err := c.AddResource(schemaBase+e.Name(), doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", e.Name(), err)
		}
	}
	b, err := schemaFS.ReadFile("schema/routes.json")
	if err != nil {
		return nil, err
	}
	var table map[string]string
	if err := json.Unmarshal(b, &table); err != nil {
		return nil, fmt.Errorf("routes.json: %w", err)
	}
	out := &contract{routes: map[string]*jsonschema.Schema{}}
	for route, file := range table {
		if strings.HasPrefix(route, "$") {
			continue
		}
		if file == "" {
			out.routes[route] = nil
			continue
		}
		sch, err := c.Compile(schemaBase + file)
		if err != nil {
			return nil, fmt.Errorf("compile %s: %w", file, err)
		}
		out.routes[route] = sch
	}
	return out, nil
}

// Route returns the route key ("PUT /drives/{id}") that method and urlPath match, or ""
// when Hearth's contract has no such call.
func Route(method, urlPath string) string {
	c, err := theContract()
	if err != nil {
		return ""
	}
	if _, ok := c.routes[method+" "+urlPath]; ok {
		return method + " " + urlPath
	}
	if i := strings.LastIndex(urlPath, "/"); i > 0 && i < len(urlPath)-1 {
		key := method + " " + urlPath[:i] + "/{id}"
		if _, ok := c.routes[key]; ok {
			return key
		}
	}
	return ""
}

// Validate checks body against the schema of route (a key Route returns). A route without
// a body must get none.
func Validate(route string, body []byte) error {
	c, err := theContract()
	if err != nil {
		return err
	}
	sch, ok := c.routes[route]
	if !ok {
		return fmt.Errorf("no such call %q", route)
	}
	if sch == nil {
		if len(bytes.TrimSpace(body)) != 0 {
			return fmt.Errorf("%s takes no body", route)
		}
		return nil
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("body is not JSON: %w", err)
	}
	if err := sch.Validate(inst); err != nil {
		return fmt.Errorf("%s body: %v", route, err)
	}
	return nil
}
