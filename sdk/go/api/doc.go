// Package api holds the JSON shapes of Hearth's REST API: the bodies the control plane
// (internal/cp) decodes and answers with, and the Go SDK (package hearth) sends and reads.
// Both use these types, so the two cannot drift apart. Names, fields and JSON tags follow
// E2B's OpenAPI spec so E2B's SDKs decode the answers unchanged; api/openapi.yaml documents
// them, Hearth additions marked.
//
// The package imports nothing of Hearth's: the SDK may not import internal/, and the control
// plane may import this.
package api
