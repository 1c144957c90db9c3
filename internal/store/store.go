// Package store is the control plane's state: API keys, templates, sandboxes, snapshots and
// hosts. Two drivers implement Store with the same migrations: SQLite (embedded, the default)
// and PostgreSQL (for control plane replicas that share one database).
package store

import (
	"context"
	"errors"
	"time"
)

// Errors every driver returns.
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict is a unique-key violation (an ID or alias that exists).
	ErrConflict = errors.New("already exists")
	// ErrInvalidCursor is a ListSandboxes cursor this store did not hand out.
	ErrInvalidCursor = errors.New("invalid cursor")
)

// DefaultTeam is the team hearth dev's key and `hearth server --api-key` keys belong to, and
// the one records from before teams existed joined.
const DefaultTeam = "default"

// ErrNoTeam is returned when a key, sandbox or template is written without a team.
var ErrNoTeam = errors.New("no team: every API key, sandbox and template belongs to one")

// Team owns API keys, sandboxes and templates; a key sees only its team's objects.
type Team struct {
	ID        string
	Name      string // unique
	CreatedAt time.Time
}

// APIKey is a team API key. Only its SHA-256 hash is stored.
type APIKey struct {
	ID         string
	TeamID     string
	Name       string
	Hash       string // hex SHA-256 of the whole key
	Mask       string // first and last characters, for display: "e2b_12…cdef"
	CreatedAt  time.Time
	LastUsedAt *time.Time
}

// Template is a sandbox template known to the control plane.
type Template struct {
	ID string
	// TeamID owns the template; a Public template is visible to every team.
	TeamID      string
	Aliases     []string // unique across templates
	CPUs        int
	MemoryMiB   int
	DiskMiB     int
	EnvdVersion string
	BuildID     string
	BuildStatus string // "building", "ready", "error"
	Public      bool
	// Artifact is the digest of the manifest of the current build in the agents' artifacts
	// store: an agent that lacks the template fetches it from there. Empty: it is only on
	// the hosts that built or copied it.
	Artifact  string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Template build statuses, as E2B names them.
const (
	BuildWaiting  = "waiting"
	BuildBuilding = "building"
	BuildReady    = "ready"
	BuildError    = "error"
)

// TemplateBuild is one build of a template made through the API.
type TemplateBuild struct {
	ID         string // UUID
	TemplateID string
	TeamID     string
	Status     string // BuildWaiting, BuildBuilding, BuildReady, BuildError
	HostID     string // the agent that builds it, once started
	// Recipe is the build's start request as received (JSON), empty while waiting.
	Recipe string
	// Reason and ReasonStep say why a build failed: the message and "base", "finalize" or
	// the 1-based step number.
	Reason, ReasonStep string
	CPUs               int
	MemoryMiB          int
	// Version is the built template's version on its host, once ready.
	Version string
	// AgentTemplate is the name the agents keep this build under, a version of its own that
	// a rebuild never replaces; "" for builds made before versions, kept under TemplateID.
	AgentTemplate string
	// Artifact is the digest of the build's manifest in the agents' artifacts store, once
	// an agent uploaded it ("" otherwise).
	Artifact string
	// Tags are the tags the build asked for; they point at it once it is ready.
	Tags []string
	// DeletedAt is set when garbage collection claimed the build (no tag, sandbox or
	// snapshot uses it): its files are being, or have been, removed from the agents.
	DeletedAt  time.Time
	CreatedAt  time.Time
	UpdatedAt  time.Time
	FinishedAt time.Time // zero until ready or error
}

// AgentName is the name the agents keep build b under.
func (b TemplateBuild) AgentName() string {
	if b.AgentTemplate != "" {
		return b.AgentTemplate
	}
	return b.TemplateID
}

// TemplateTag points a tag of a template at one of its builds (E2B's name:tag).
type TemplateTag struct {
	TemplateID string
	Tag        string
	BuildID    string
	CreatedAt  time.Time
}

// DefaultTag is the tag a bare template name means.
const DefaultTag = "default"

// BuildLogEntry is one line of a build's log; Seq counts from 0 in each build.
type BuildLogEntry struct {
	Seq     int
	Time    time.Time
	Level   string
	Step    string
	Message string
}

// Sandbox states as the control plane records them. Transitional states exist so that an
// operation in flight is visible to every replica.
const (
	StateStarting = "starting"
	StateRunning  = "running"
	StatePausing  = "pausing"
	StatePaused   = "paused"
	StateResuming = "resuming"
	StateStopping = "stopping"
	// StateLost: the sandbox was running when its host stopped sending heartbeats. It is
	// not run anywhere else; it is running again if its host comes back with it, and is
	// forgotten if the host comes back without it or it is killed.
	StateLost = "lost"
)

// Sandbox is one sandbox's record.
type Sandbox struct {
	ID         string
	TeamID     string
	TemplateID string
	Alias      string // the template alias it was created from, if any
	// BuildID is the API build it booted (its template version), "" for templates built on
	// the agents: a rebuild or a tag moving leaves it on this one.
	BuildID   string
	HostID    string // agent that runs it, or holds its snapshot while paused
	State     string
	CPUs      int
	MemoryMiB int
	DiskMiB   int
	StartedAt time.Time
	// EndAt is the deadline: on expiry the sandbox is killed, or paused when AutoPause.
	EndAt       time.Time
	Metadata    map[string]string
	EnvVars     map[string]string
	EnvdVersion string
	// EnvdAccessToken and TrafficAccessToken are set for secure sandboxes.
	EnvdAccessToken    string
	TrafficAccessToken string
	Secure             bool
	// AllowInternet false denies all outbound traffic but AllowOut (E2B's
	// allow_internet_access). AllowOut and DenyOut are the user's own outbound lists, IPv4
	// addresses and CIDR ranges; AllowOut wins over DenyOut.
	AllowInternet bool
	AllowOut      []string
	DenyOut       []string
	// AllowPublicTraffic false makes the sandbox's ports (envd's aside) require the
	// traffic access token.
	AllowPublicTraffic bool
	AutoPause          bool
	AutoResume         bool
	// AutoPauseFilesystemOnly makes the timeout's pause keep only the disk (E2B's
	// autoPauseMemory false); PausedFilesystemOnly says the pause the sandbox is in did, so
	// only an explicit resume or connect (never traffic) brings it back, booted afresh.
	AutoPauseFilesystemOnly bool
	PausedFilesystemOnly    bool
	// SnapshotManifest, while paused, is the digest of the manifest of the sandbox's paused
	// state in the agents' artifacts store: any agent sharing that store can resume it, so a
	// host that is down or draining does not hold it. Empty: it resumes on HostID only.
	SnapshotManifest string
	// Version increases on every update (optimistic concurrency between replicas).
	Version   int64
	UpdatedAt time.Time
}

// SandboxFilter selects sandboxes for listing. Zero fields do not filter.
type SandboxFilter struct {
	TeamID   string
	States   []string
	Metadata map[string]string // every pair must match exactly
	Template string            // template ID
	HostID   string
	// StartedAfter keeps sandboxes started at or after it (E2B's startedAfter is inclusive);
	// start times are kept to the millisecond.
	StartedAfter time.Time
	// Limit caps the page (1..100; 0 means 100). Cursor is the NextCursor of the previous page.
	Limit  int
	Cursor string
	// Ascending orders by start time oldest first; the default is newest first.
	Ascending bool
}

// Snapshot is a copy of a running sandbox (files, memory, processes) kept on the host that
// took it, which new sandboxes start from (E2B's snapshots). It outlives its sandbox.
type Snapshot struct {
	ID   string
	Name string // unique within a team; "" for an unnamed snapshot
	// TeamID is the team that owns it: the source sandbox's ("" without teams).
	TeamID          string
	SourceSandboxID string
	HostID          string // the host that keeps it; sandboxes start from it there
	TemplateID      string
	Alias           string // the template alias the source was created from, if any
	BuildID         string // the source's API build ("" for templates built on the agents)
	CPUs            int
	MemoryMiB       int
	DiskMiB         int
	EnvdVersion     string
	SizeBytes       int64
	CreatedAt       time.Time
}

// SnapshotFilter selects snapshots for listing. Zero fields do not filter.
type SnapshotFilter struct {
	TeamID          string
	SourceSandboxID string
	// NameOrID keeps the snapshot with this name or this ID.
	NameOrID string
	// Limit caps the page (1..100; 0 means 100). Cursor is the next cursor of the previous
	// page. Pages are newest first.
	Limit  int
	Cursor string
}

// Host is a registered host agent.
type Host struct {
	ID        string
	RPCAddr   string // host:port of hostagent.v1 (HTTP/2 cleartext)
	ProxyAddr string // host:port of the agent's sandbox proxy (HTTP/1.1)
	Runtime   string
	State     string // "ready", "down"
	CPUs      int
	// MemoryTotalMiB and MemoryAvailableMiB are the host's; MemoryCommittedMiB the sum of
	// its running sandboxes' limits, as the agent last reported.
	MemoryTotalMiB     int64
	MemoryAvailableMiB int64
	MemoryCommittedMiB int64
	SandboxesRunning   int
	SandboxesPaused    int
	// CPUsCommitted is the sum of its running sandboxes' vCPUs; MaxSandboxes its agent's cap
	// on running sandboxes (0: none).
	CPUsCommitted int
	MaxSandboxes  int
	RegisteredAt  time.Time
	LastHeartbeat time.Time
	// TokenHash is the SHA-256 (hex) of the host's own credential; empty for a host that has
	// not been issued one yet. PutHost never changes it once set: only ClaimHost does.
	TokenHash string
	// Draining hosts take no new sandboxes. PutHost and ClaimHost write it only when they
	// create the host; SetHostDraining changes it.
	Draining bool
}

// Host states.
const (
	HostReady = "ready"
	HostDown  = "down"
)

// Store is implemented by the sqlite and postgres drivers. All methods are safe for
// concurrent use, honour ctx, and return ErrNotFound / ErrConflict (wrapped) as documented.
type Store interface {
	Close() error

	CreateTeam(ctx context.Context, t Team) error // ErrConflict on a duplicate ID or name
	// Team finds a team by ID, then by name.
	Team(ctx context.Context, idOrName string) (Team, error)
	ListTeams(ctx context.Context) ([]Team, error)

	// CreateAPIKey stores k: ErrConflict on a duplicate ID or hash, ErrNoTeam without a
	// TeamID, ErrNotFound for a team that does not exist.
	CreateAPIKey(ctx context.Context, k APIKey) error
	// APIKeyByHash returns the key with this hash and records its use.
	APIKeyByHash(ctx context.Context, hash string) (APIKey, error)
	// ListAPIKeys returns the keys of one team, or of every team when teamID is "".
	ListAPIKeys(ctx context.Context, teamID string) ([]APIKey, error)
	DeleteAPIKey(ctx context.Context, id string) error

	// PutTemplate creates or replaces a template (by ID); ErrConflict if an alias belongs to
	// another template, ErrNoTeam without a TeamID.
	PutTemplate(ctx context.Context, t Template) error
	// Template finds a template by ID or alias.
	Template(ctx context.Context, idOrAlias string) (Template, error)
	ListTemplates(ctx context.Context) ([]Template, error)
	DeleteTemplate(ctx context.Context, id string) error

	// CreateTemplateBuild records a new build; ErrConflict on a duplicate ID.
	CreateTemplateBuild(ctx context.Context, b TemplateBuild) error
	TemplateBuild(ctx context.Context, id string) (TemplateBuild, error)
	// UpdateTemplateBuild reads the build, applies fn and writes it back atomically; if fn
	// returns an error nothing is written and that error is returned.
	UpdateTemplateBuild(ctx context.Context, id string, fn func(*TemplateBuild) error) (TemplateBuild, error)
	// ListTemplateBuilds returns a template's builds, newest first.
	ListTemplateBuilds(ctx context.Context, templateID string) ([]TemplateBuild, error)
	// SetTemplateTag points tag t.Tag of t.TemplateID at t.BuildID, creating or moving it;
	// ErrNotFound for a template that does not exist.
	SetTemplateTag(ctx context.Context, t TemplateTag) error
	// TemplateTag returns one tag of a template, or ErrNotFound.
	TemplateTag(ctx context.Context, templateID, tag string) (TemplateTag, error)
	// ListTemplateTags returns a template's tags, by tag.
	ListTemplateTags(ctx context.Context, templateID string) ([]TemplateTag, error)
	// DeleteTemplateTag removes one tag; ErrNotFound if the template has no such tag.
	DeleteTemplateTag(ctx context.Context, templateID, tag string) error
	// TemplateBuildUsers counts what uses build buildID: the tags pointing at it and the
	// sandboxes (in any state) and snapshots that record it.
	TemplateBuildUsers(ctx context.Context, buildID string) (int, error)
	// AppendBuildLogs adds entries to a build's log (ErrConflict if a Seq exists).
	AppendBuildLogs(ctx context.Context, buildID string, entries []BuildLogEntry) error
	// BuildLogs returns up to limit entries of a build's log from Seq offset on.
	BuildLogs(ctx context.Context, buildID string, offset, limit int) ([]BuildLogEntry, error)

	CreateSandbox(ctx context.Context, s Sandbox) error // ErrConflict on a duplicate ID, ErrNoTeam without a TeamID
	Sandbox(ctx context.Context, id string) (Sandbox, error)
	// UpdateSandbox reads the sandbox, applies fn and writes it back atomically (no other
	// update interleaves), increasing Version. If fn returns an error nothing is written and
	// that error is returned. A sandbox's team never changes: fn cannot change TeamID.
	UpdateSandbox(ctx context.Context, id string, fn func(*Sandbox) error) (Sandbox, error)
	DeleteSandbox(ctx context.Context, id string) error
	// ListSandboxes returns one page and the cursor of the next ("" when it is the last).
	ListSandboxes(ctx context.Context, f SandboxFilter) (page []Sandbox, nextCursor string, err error)
	// ExpiredSandboxes returns running and lost sandboxes whose EndAt is before now.
	ExpiredSandboxes(ctx context.Context, now time.Time) ([]Sandbox, error)

	// CreateSnapshot stores a snapshot; ErrConflict on a duplicate ID. A snapshot with a
	// name takes it over from the team's snapshot that had it, atomically: that one's record
	// is deleted and returned (replaced), so its files can be removed from its host.
	CreateSnapshot(ctx context.Context, s Snapshot) (replaced *Snapshot, err error)
	// Snapshot finds a snapshot of a team by ID or name: an ID wins over an equal name.
	Snapshot(ctx context.Context, teamID, idOrName string) (Snapshot, error)
	// ListSnapshots returns one page, newest first, and the cursor of the next ("" when it
	// is the last).
	ListSnapshots(ctx context.Context, f SnapshotFilter) (page []Snapshot, nextCursor string, err error)
	DeleteSnapshot(ctx context.Context, id string) error

	// PutHost registers or updates a host (by ID). It sets TokenHash only when it creates
	// the host; an update keeps the stored one.
	PutHost(ctx context.Context, h Host) error
	// ClaimHost writes h, TokenHash included, if no host has h.ID or the one that has it has
	// no TokenHash yet, atomically; ErrConflict if the ID is held by a token. Two agents
	// registering one new ID at once: exactly one wins.
	ClaimHost(ctx context.Context, h Host) error
	Host(ctx context.Context, id string) (Host, error)
	ListHosts(ctx context.Context) ([]Host, error)
	DeleteHost(ctx context.Context, id string) error
	// SetHostDraining sets or clears a host's Draining flag; ErrNotFound if there is no
	// such host.
	SetHostDraining(ctx context.Context, id string, draining bool) error
	// MarkHostDown sets a ready host whose last heartbeat is before silentSince down, in one
	// conditional write, and says whether it did: of replicas checking at once exactly one
	// marks it, and a heartbeat recorded meanwhile keeps the host ready.
	MarkHostDown(ctx context.Context, id string, silentSince time.Time) (bool, error)
}
