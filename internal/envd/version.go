// Package envd assembles the in-sandbox daemon: the process and filesystem Connect services,
// the file transfer routes, and the control routes the host uses (/init, /health, /metrics).
package envd

// Version is the envd version Hearth reports to SDKs as envdVersion. The E2B SDKs switch
// features off for envd older than the version that introduced them, and 0.6.4 is the newest
// gate they check (network-mount watching); keep this the single place it is written.
const Version = "0.6.4"

// Port is where envd listens inside every sandbox.
const Port = 49983
