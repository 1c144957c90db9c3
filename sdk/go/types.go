package hearth

import "github.com/hearthsh/hearth/sdk/go/api"

// SandboxState is a sandbox's state as the API reports it.
type SandboxState = api.SandboxState

// The states the API reports and list filters accept.
const (
	StateRunning = api.StateRunning
	StatePaused  = api.StatePaused
	// StateLost (Hearth-only): the sandbox was running when its host stopped responding; it
	// is running again if the host comes back with it.
	StateLost = api.StateLost
)

// CreatedSandbox is the API's answer to create, connect and resume (E2B's Sandbox schema).
// The Sandbox handle sends its EnvdAccessToken with every request to the sandbox's envd.
type CreatedSandbox = api.Sandbox

// ListedSandbox is one sandbox of the list (E2B's ListedSandbox).
type ListedSandbox = api.ListedSandbox

// SandboxInfo describes a sandbox as GET /sandboxes/{id} returns it (E2B's SandboxDetail):
// the listed fields and its envd access token, lifecycle and network.
type SandboxInfo = api.SandboxDetail

// Template describes a template sandboxes can be created from (an element of GET
// /templates).
type Template = api.Template
