package api

import (
	"encoding/json"
	"time"
)

// Template builds through the API, as E2B's Template SDK drives them (build system v2).

// TemplateBuildRequestV3 is the body of POST /v3/templates. Its omitempty tags only shape
// what the SDK sends; the control plane decodes an omitted field and a null alike.
type TemplateBuildRequestV3 struct {
	Name          string   `json:"name"`
	Alias         string   `json:"alias,omitempty"` // deprecated; used when there is no name
	Tags          []string `json:"tags,omitempty"`
	TeamID        string   `json:"teamID,omitempty"`
	CPUCount      *int     `json:"cpuCount,omitempty"`
	MemoryMB      *int     `json:"memoryMB,omitempty"`
	MinFreeDiskMB *int     `json:"minFreeDiskMb,omitempty"`
}

// TemplateRequestResponseV3 answers POST /v3/templates.
type TemplateRequestResponseV3 struct {
	TemplateID string   `json:"templateID"`
	BuildID    string   `json:"buildID"`
	Public     bool     `json:"public"`
	Names      []string `json:"names"`
	Tags       []string `json:"tags"`
	Aliases    []string `json:"aliases"`
}

// TemplateStep is one step of TemplateBuildStartV2. Extra keys the SDK sends (forceUpload,
// resolveSymlinks, gzip) are ignored.
type TemplateStep struct {
	Type      string   `json:"type"`
	Args      []string `json:"args"`
	FilesHash string   `json:"filesHash,omitempty"`
	Force     bool     `json:"force,omitempty"`
}

// TemplateBuildStartV2 is the body of POST /v2/templates/{templateID}/builds/{buildID}.
type TemplateBuildStartV2 struct {
	FromImage         string          `json:"fromImage,omitempty"`
	FromTemplate      string          `json:"fromTemplate,omitempty"`
	FromImageRegistry json.RawMessage `json:"fromImageRegistry,omitempty"`
	Force             bool            `json:"force,omitempty"`
	Steps             []TemplateStep  `json:"steps"`
	StartCmd          string          `json:"startCmd,omitempty"`
	ReadyCmd          string          `json:"readyCmd,omitempty"`
}

// TemplateBuildFileUpload answers GET /templates/{templateID}/files/{hash}.
type TemplateBuildFileUpload struct {
	Present bool   `json:"present"`
	URL     string `json:"url,omitempty"`
}

// BuildLogEntry is one entry of a build's log.
type BuildLogEntry struct {
	Timestamp time.Time `json:"timestamp"`
	Level     string    `json:"level"`
	Message   string    `json:"message"`
	Step      string    `json:"step,omitempty"`
}

// BuildStatusReason says why a build failed.
type BuildStatusReason struct {
	Message    string          `json:"message"`
	Step       string          `json:"step,omitempty"`
	LogEntries []BuildLogEntry `json:"logEntries,omitempty"`
}

// TemplateBuildInfo answers GET /templates/{templateID}/builds/{buildID}/status.
type TemplateBuildInfo struct {
	TemplateID string             `json:"templateID"`
	BuildID    string             `json:"buildID"`
	Status     string             `json:"status"`
	LogEntries []BuildLogEntry    `json:"logEntries"`
	Logs       []string           `json:"logs"`
	Reason     *BuildStatusReason `json:"reason,omitempty"`
}

// RegistryConfig is fromImageRegistry: E2B's RegistryConfig (a oneOf on type). Hearth
// serves the generic type "registry", a username and password.
type RegistryConfig struct {
	Type     string `json:"type"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// TemplateAliasResponse answers GET /templates/aliases/{alias}.
type TemplateAliasResponse struct {
	TemplateID string `json:"templateID"`
	Public     bool   `json:"public"`
}
