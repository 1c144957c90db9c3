// Package hearthtest helps test code that uses Hearth's Go client: a strict in-memory fake of
// the E2B-compatible REST API, and a real envd built from this module and run on the local
// machine, which stands in for a sandbox (envd ignores the proxy's routing headers).
//
// The fake is a contract check as much as a stand-in: it writes its responses from its own
// description of the API, not from the client's types, and it fails the test on any request
// the API would not accept (unknown paths, query parameters or body fields, missing fields,
// wrong content type), so a client that drifts from the contract fails here first.
package hearthtest
