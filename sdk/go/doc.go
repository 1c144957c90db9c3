// Package hearth is the Go client for Hearth, and for any service that speaks E2B's REST API
// and envd protocol.
//
// A Client talks to two endpoints: the REST API (sandbox lifecycle, templates) and the sandbox
// proxy, through which every request to a sandbox's envd travels, routed by the
// E2b-Sandbox-Id and E2b-Sandbox-Port headers. A Sandbox handle carries Commands, Files and
// PTY services that use envd's Connect RPC services and its /files routes.
//
// Envd traffic uses HTTP/1.1 only: the proxy forwards sandbox traffic over HTTP/1.1, and
// Connect server streams (command output, PTY output) work over it as chunked responses.
// Input to processes is sent with unary SendInput calls for the same reason: a client stream
// would need a full-duplex HTTP/2 connection.
package hearth
