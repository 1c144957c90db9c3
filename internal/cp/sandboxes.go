package cp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/envd"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/template"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// timeoutFor turns a requested timeout in seconds into a duration within bounds. The bound
// is checked on the seconds, before the multiplication, which would overflow time.Duration
// for huge values and give a negative lifetime (an instant expiry).
func (s *Server) timeoutFor(sec *int) (time.Duration, error) {
	if sec == nil {
		return s.cfg.DefaultTimeout, nil
	}
	maxSec := int64(s.cfg.MaxTimeout / time.Second)
	if *sec < 0 || int64(*sec) > maxSec {
		return 0, errorf(http.StatusBadRequest, "timeout must be 0 to %d seconds (%v; 0 means the default), got %d", maxSec, s.cfg.MaxTimeout, *sec)
	}
	d := time.Duration(*sec) * time.Second
	if d == 0 {
		d = s.cfg.DefaultTimeout
	}
	return d, nil
}

// checkTemplateName turns a name that cannot be a template into a 400 naming the form.
func checkTemplateName(field, name string) error {
	if err := template.CheckName(name); err != nil {
		return errorf(http.StatusBadRequest, "%s %q is not a template name: want %s", field, name, template.NameForm)
	}
	return nil
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var req api.NewSandbox
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	sb, err := s.create(r.Context(), req)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.sandboxResponse(sb))
}

// create places and boots a sandbox; the record exists in state starting meanwhile.
func (s *Server) create(ctx context.Context, req api.NewSandbox) (store.Sandbox, error) {
	if req.TemplateID == "" {
		return store.Sandbox{}, errorf(http.StatusBadRequest, "templateID is required (for example \"base\")")
	}
	snap, fromSnapshot, err := s.snapshotFor(ctx, req.TemplateID)
	if err != nil {
		return store.Sandbox{}, err
	}
	if !fromSnapshot {
		// name[:tag]: the name as a template name, the tag as a tag.
		alias, tag, tagged := strings.Cut(req.TemplateID, ":")
		if err := checkTemplateName("templateID", alias); err != nil {
			return store.Sandbox{}, err
		}
		if err := checkTag(tag, tagged); err != nil {
			return store.Sandbox{}, err
		}
	}
	ttl, err := s.timeoutFor(req.Timeout)
	if err != nil {
		return store.Sandbox{}, err
	}
	network, err := checkNetwork(req)
	if err != nil {
		return store.Sandbox{}, err
	}
	team := teamOf(ctx)
	if team == "" {
		return store.Sandbox{}, errors.New("create sandbox: request has no team")
	}
	autoPause := req.AutoPause != nil && *req.AutoPause
	autoResume := req.AutoResume != nil && req.AutoResume.Enabled
	fsOnly := autoPause && req.AutoPauseMemory != nil && !*req.AutoPauseMemory
	if fsOnly && autoResume {
		return store.Sandbox{}, errorf(http.StatusBadRequest, "autoResume cannot be enabled with autoPauseMemory false: a filesystem-only pause is resumed only by connect or resume, never by traffic")
	}
	var (
		tplID, alias    string
		cpus, mem, disk int
		host            store.Host
		tplArtifact     string
		buildID         string // the API build (version) booted
		agentTemplate   string // the name the agent keeps that version under
	)
	if fromSnapshot {
		// A sandbox from a snapshot is a copy of the snapshot's sandbox, on the host that
		// keeps it.
		tplID, alias, cpus, mem, disk, buildID = snap.TemplateID, snap.Alias, snap.CPUs, snap.MemoryMiB, snap.DiskMiB, snap.BuildID
		agentTemplate = snap.TemplateID
		if snap.BuildID != "" {
			if b, err := s.store.TemplateBuild(ctx, snap.BuildID); err == nil {
				agentTemplate = b.AgentName()
			}
		}
		if host, err = s.store.Host(ctx, snap.HostID); err != nil || host.State != store.HostReady || time.Since(host.LastHeartbeat) > s.cfg.HostDeadAfter {
			return store.Sandbox{}, errorf(http.StatusServiceUnavailable, "snapshot %s is kept on host %s, which is not available", req.TemplateID, snap.HostID)
		}
	} else {
		// name:tag boots the build the tag points at; the bare name the default tag's.
		ref, err := s.resolveTemplate(ctx, req.TemplateID)
		if err != nil {
			return store.Sandbox{}, err
		}
		tpl := ref.tpl
		tplID, tplArtifact = tpl.ID, ref.artifact()
		cpus, mem, disk = s.shapeOf(ref)
		buildID, agentTemplate = ref.buildID(), ref.agentName()
		if n, _ := parseTemplateName(req.TemplateID); n.alias != tpl.ID {
			alias = n.alias
		}
		// An API-built template lives on the agent that built it.
		tplHost, err := s.templateHost(ctx, ref)
		if err != nil {
			return store.Sandbox{}, err
		}
		d := demand{memMiB: mem, cpus: cpus}
		if host, err = s.placeTemplate(ctx, d, tplHost); err != nil {
			if ref.build == nil || tplArtifact == "" {
				return store.Sandbox{}, err
			}
			// The version is in the agents' artifacts store: any agent sharing it fetches it.
			if host, err = s.place(ctx, d); err != nil {
				return store.Sandbox{}, err
			}
		}
	}
	s.addPending(host.ID, demand{memMiB: mem, cpus: cpus})

	now := time.Now().UTC()
	sb := store.Sandbox{
		ID: newSandboxID(), TeamID: team, TemplateID: tplID, Alias: alias, BuildID: buildID, HostID: host.ID, State: store.StateStarting,
		CPUs: cpus, MemoryMiB: mem, DiskMiB: disk, StartedAt: now, EndAt: now.Add(ttl),
		Metadata: req.Metadata, EnvVars: req.EnvVars, EnvdVersion: envd.Version,
		AllowInternet: req.AllowInternetAccess == nil || *req.AllowInternetAccess,
		AutoPause:     autoPause, AutoResume: autoResume, AutoPauseFilesystemOnly: fsOnly,
	}
	sb.AllowOut, sb.DenyOut, sb.AllowPublicTraffic = network.AllowOut, network.DenyOut, network.AllowPublicTraffic
	// Every sandbox's envd requires its access token, whatever `secure` says, as on E2B
	// today: a sandbox's ID is in every preview URL, and envd's port runs commands as root.
	sb.Secure = true
	sb.EnvdAccessToken = randomToken()
	sb.TrafficAccessToken = randomToken()
	if err := s.store.CreateSandbox(ctx, sb); err != nil {
		return store.Sandbox{}, err
	}
	if buildID != "" && !fromSnapshot {
		// The record names the build now; read the build again: garbage collection claims a
		// build before it counts its users, so either it sees this record or this sees its
		// claim (see collectBuild).
		if b, err := s.store.TemplateBuild(ctx, buildID); err != nil || !b.DeletedAt.IsZero() {
			_ = s.store.DeleteSandbox(context.WithoutCancel(ctx), sb.ID)
			return store.Sandbox{}, errorf(http.StatusNotFound, "template %s: build %s was deleted meanwhile (its tag moved): create again", tplID, buildID)
		}
	}
	s.events.own(sb.ID, team)
	creq := &pb.CreateRequest{
		SandboxId: sb.ID, Template: agentTemplate, Cpus: uint32(cpus), MemoryMib: uint32(mem),
		EnvVars: withSandboxEnv(sb), EnvdAccessToken: sb.EnvdAccessToken, Metadata: sb.Metadata,
		Egress: egressOf(sb), DiskMib: uint32(max(sb.DiskMiB, 0)),
		// An agent that lacks the template fetches this build (agents sharing --artifacts).
		TemplateArtifact: tplArtifact,
	}
	if fromSnapshot {
		creq.SnapshotId = snap.ID
		s.events.add(sb.ID, "info", fmt.Sprintf("creating from snapshot %s on host %s", snap.ID, host.ID))
	} else {
		s.events.add(sb.ID, "info", fmt.Sprintf("creating from template %s on host %s", tplID, host.ID))
	}

	actx, cancel := context.WithTimeout(ctx, s.cfg.CreateTimeout)
	defer cancel()
	res, err := s.agents.client(host).Create(actx, connect.NewRequest(creq))
	if err != nil {
		cctx := context.WithoutCancel(ctx)
		_, _ = s.agents.client(host).Destroy(cctx, connect.NewRequest(&pb.DestroyRequest{SandboxId: sb.ID}))
		_ = s.store.DeleteSandbox(cctx, sb.ID)
		return store.Sandbox{}, fmt.Errorf("create sandbox on host %s: %w", host.ID, err)
	}
	sb, err = s.store.UpdateSandbox(ctx, sb.ID, func(x *store.Sandbox) error {
		x.State = store.StateRunning
		x.EnvdVersion = res.Msg.GetSandbox().GetEnvdVersion()
		// A template without a disk size gets the agent's default, which only it knows.
		if d := res.Msg.GetSandbox().GetDiskMib(); d > 0 {
			x.DiskMiB = int(d)
		}
		// The deadline counts from when the sandbox is usable.
		x.EndAt = time.Now().UTC().Add(ttl)
		return nil
	})
	if err != nil {
		return store.Sandbox{}, err
	}
	s.events.add(sb.ID, "info", "sandbox running")
	return sb, nil
}

// withSandboxEnv adds the variables E2B sets in every sandbox.
func withSandboxEnv(sb store.Sandbox) map[string]string {
	env := map[string]string{"E2B_SANDBOX": "true", "E2B_SANDBOX_ID": sb.ID, "HEARTH_SANDBOX_ID": sb.ID}
	for k, v := range sb.EnvVars {
		env[k] = v
	}
	return env
}

func (s *Server) sandboxResponse(sb store.Sandbox) api.Sandbox {
	return api.Sandbox{TemplateID: sb.TemplateID, SandboxID: sb.ID, Alias: sb.Alias, ClientID: sb.HostID, EnvdVersion: sb.EnvdVersion,
		EnvdAccessToken: sb.EnvdAccessToken, TrafficAccessToken: sb.TrafficAccessToken, Domain: s.cfg.Domain}
}

func listed(sb store.Sandbox) api.ListedSandbox {
	return api.ListedSandbox{
		TemplateID: sb.TemplateID, Alias: sb.Alias, SandboxID: sb.ID, ClientID: sb.HostID, StartedAt: sb.StartedAt, EndAt: sb.EndAt,
		CPUCount: sb.CPUs, MemoryMB: sb.MemoryMiB, DiskSizeMB: sb.DiskMiB, Metadata: sb.Metadata,
		State: publicState(sb.State), EnvdVersion: sb.EnvdVersion,
	}
}

// publicState maps internal states to E2B's two public ones; transitional states show the
// state the sandbox is leaving. A lost sandbox (its host stopped responding) is "lost", a
// Hearth extension: it is neither running nor resumable until its host is back.
func publicState(st string) api.SandboxState {
	switch st {
	case store.StatePaused, store.StateResuming:
		return "paused"
	case store.StateLost:
		return store.StateLost
	default:
		return "running"
	}
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) {
	sb, err := s.store.Sandbox(r.Context(), r.PathValue("id"))
	if err != nil {
		fail(w, sandboxErr(r.PathValue("id"), err))
		return
	}
	d := api.SandboxDetail{ListedSandbox: listed(sb), AllowInternet: sb.AllowInternet, Network: networkOf(sb),
		Lifecycle: api.Lifecycle{OnTimeout: "kill", AutoResume: sb.AutoResume}}
	if sb.AutoPause {
		d.Lifecycle.OnTimeout = "pause"
	}
	d.EnvdAccessToken, d.Domain = sb.EnvdAccessToken, s.cfg.Domain
	writeJSON(w, http.StatusOK, d)
}

// sandboxErr says which sandbox was not found.
func sandboxErr(id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "sandbox %s not found", id)
	}
	return err
}

// listFilter parses the query of GET /v2/sandboxes; the list is of team's sandboxes.
func listFilter(team string, q url.Values) (store.SandboxFilter, error) {
	f := store.SandboxFilter{TeamID: team, Cursor: q.Get("nextToken"), Template: q.Get("template")}
	if team == "" { // an empty team filter would list every team's sandboxes
		return f, errors.New("list sandboxes: request has no team")
	}
	if m := q.Get("metadata"); m != "" {
		pairs, err := url.ParseQuery(m)
		if err != nil {
			return f, errorf(http.StatusBadRequest, "metadata must be URL-encoded key=value pairs joined by &: %v", err)
		}
		// The SDKs percent-encode each key and value before form-encoding the pairs, so
		// each needs one more decoding; plain keys are unchanged by it.
		f.Metadata = map[string]string{}
		for k, vs := range pairs {
			key, err1 := url.PathUnescape(k)
			val, err2 := url.PathUnescape(vs[len(vs)-1])
			if err1 != nil || err2 != nil {
				return f, errorf(http.StatusBadRequest, "metadata key or value %q is not percent-encoded correctly", k)
			}
			f.Metadata[key] = val
		}
	}
	for _, v := range q["state"] {
		for _, st := range strings.Split(v, ",") {
			switch st {
			case "running":
				f.States = append(f.States, store.StateRunning, store.StateStarting, store.StatePausing, store.StateStopping)
			case "paused":
				f.States = append(f.States, store.StatePaused, store.StateResuming)
			case store.StateLost:
				f.States = append(f.States, store.StateLost)
			case "":
			default:
				return f, errorf(http.StatusBadRequest, "state %q is not running, paused or lost", st)
			}
		}
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			return f, errorf(http.StatusBadRequest, "limit must be 1 to 100, got %q", l)
		}
		f.Limit = n
	}
	if sa := q.Get("startedAfter"); sa != "" {
		t, err := time.Parse(time.RFC3339, sa)
		if err != nil {
			return f, errorf(http.StatusBadRequest, "startedAfter must be an RFC 3339 time: %v", err)
		}
		f.StartedAfter = t
	}
	switch q.Get("order") {
	case "", "desc":
	case "asc":
		f.Ascending = true
	default:
		return f, errorf(http.StatusBadRequest, "order must be asc or desc")
	}
	return f, nil
}

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	f, err := listFilter(teamOf(r.Context()), r.URL.Query())
	if err != nil {
		fail(w, err)
		return
	}
	page, next, err := s.store.ListSandboxes(r.Context(), f)
	if err != nil {
		if errors.Is(err, store.ErrInvalidCursor) {
			err = errorf(http.StatusBadRequest, "nextToken is not one this API returned")
		}
		fail(w, err)
		return
	}
	out := make([]api.ListedSandbox, 0, len(page))
	for _, sb := range page {
		out = append(out, listed(sb))
	}
	if next != "" {
		w.Header().Set("X-Next-Token", next)
	}
	writeJSON(w, http.StatusOK, out)
}

// listRunning is the deprecated GET /sandboxes: running sandboxes, all pages.
func (s *Server) listRunning(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	q.Del("state")
	q.Set("state", "running")
	f, err := listFilter(teamOf(r.Context()), q)
	if err != nil {
		fail(w, err)
		return
	}
	out := []api.ListedSandbox{}
	for {
		page, next, err := s.store.ListSandboxes(r.Context(), f)
		if err != nil {
			fail(w, err)
			return
		}
		for _, sb := range page {
			out = append(out, listed(sb))
		}
		if next == "" {
			break
		}
		f.Cursor = next
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request) {
	var body api.TimeoutBody
	if err := decode(r, &body); err != nil {
		fail(w, err)
		return
	}
	if body.Timeout == nil {
		writeError(w, http.StatusBadRequest, "timeout (seconds) is required")
		return
	}
	ttl, err := s.timeoutFor(body.Timeout)
	if err != nil {
		fail(w, err)
		return
	}
	s.updateDeadline(w, r, func(time.Time) time.Time { return time.Now().UTC().Add(ttl) })
}

// updateDeadline sets a sandbox's deadline to what end makes of the current one and answers
// 204.
func (s *Server) updateDeadline(w http.ResponseWriter, r *http.Request, end func(current time.Time) time.Time) {
	id := r.PathValue("id")
	_, err := s.store.UpdateSandbox(r.Context(), id, func(x *store.Sandbox) error {
		x.EndAt = end(x.EndAt)
		return nil
	})
	if err != nil {
		fail(w, sandboxErr(id, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) refresh(w http.ResponseWriter, r *http.Request) {
	var body api.RefreshBody
	if err := decode(r, &body); err != nil {
		fail(w, err)
		return
	}
	d := 60
	if body.Duration != nil {
		d = *body.Duration
	}
	if d < 0 || d > 3600 {
		writeError(w, http.StatusBadRequest, "duration must be 0 to 3600 seconds")
		return
	}
	// A refresh extends the deadline and never shortens it.
	s.updateDeadline(w, r, func(current time.Time) time.Time {
		return laterOf(current, time.Now().UTC().Add(time.Duration(d)*time.Second))
	})
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (s *Server) killSandbox(w http.ResponseWriter, r *http.Request) {
	if err := s.kill(r.Context(), r.PathValue("id"), "killed by request"); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// kill destroys a running or paused sandbox and forgets it.
func (s *Server) kill(ctx context.Context, id, reason string) error {
	var wasRunning bool
	sb, err := s.store.UpdateSandbox(ctx, id, func(x *store.Sandbox) error {
		switch x.State {
		case store.StateRunning, store.StatePaused, store.StateLost:
			wasRunning = x.State == store.StateRunning
			x.State = store.StateStopping
			return nil
		}
		return busy(id, x.State, "kill")
	})
	if err != nil {
		return sandboxErr(id, err)
	}
	return s.killClaimed(ctx, sb, wasRunning, reason)
}

// killClaimed destroys a sandbox this caller moved to stopping; wasRunning says it was
// running before (so its memory counted on its host).
func (s *Server) killClaimed(ctx context.Context, sb store.Sandbox, wasRunning bool, reason string) error {
	id := sb.ID
	s.forgetRoute(id)
	host, err := s.store.Host(ctx, sb.HostID)
	if err == nil && host.State == store.HostReady {
		actx, cancel := context.WithTimeout(ctx, s.cfg.CreateTimeout)
		_, err = s.agents.client(host).Destroy(actx, connect.NewRequest(&pb.DestroyRequest{SandboxId: id}))
		cancel()
		if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
			// Leave it stopping: reconciliation with the agent finishes the job.
			return fmt.Errorf("destroy sandbox %s on host %s: %w", id, host.ID, err)
		}
		if err == nil && wasRunning {
			s.addReleased(host.ID, sb)
		}
	}
	if err := s.store.DeleteSandbox(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	s.events.add(id, "info", reason)
	return nil
}

// transition moves a sandbox from one of the states in from to state to, or says why not.
func (s *Server) transition(ctx context.Context, id, op string, from []string, to string) (store.Sandbox, error) {
	sb, err := s.store.UpdateSandbox(ctx, id, func(x *store.Sandbox) error {
		for _, f := range from {
			if x.State == f {
				x.State = to
				return nil
			}
		}
		if x.State == store.StateLost {
			return lostErr(*x, op)
		}
		return busy(id, x.State, op)
	})
	return sb, sandboxErr(id, err)
}

// setState records the outcome of an operation; failures are logged, since the operation
// itself already happened on the agent.
func (s *Server) setState(ctx context.Context, id, state string, also func(*store.Sandbox)) (store.Sandbox, error) {
	return s.store.UpdateSandbox(context.WithoutCancel(ctx), id, func(x *store.Sandbox) error {
		x.State = state
		if also != nil {
			also(x)
		}
		return nil
	})
}

func (s *Server) pauseSandbox(w http.ResponseWriter, r *http.Request) {
	var body api.PauseBody
	if err := decode(r, &body); err != nil {
		fail(w, err)
		return
	}
	if err := s.pause(r.Context(), r.PathValue("id"), body.Memory != nil && !*body.Memory); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// pause snapshots a running sandbox on its agent; fsOnly keeps only its disk.
func (s *Server) pause(ctx context.Context, id string, fsOnly bool) error {
	sb, err := s.transition(ctx, id, "pause", []string{store.StateRunning}, store.StatePausing)
	if err != nil {
		return err
	}
	return s.pauseClaimed(ctx, sb, fsOnly)
}

// pauseClaimed pauses a sandbox this caller moved to pausing; on failure it is running again.
func (s *Server) pauseClaimed(ctx context.Context, sb store.Sandbox, fsOnly bool) error {
	id := sb.ID
	// New traffic asks the store from now on, which says pausing (409) and then paused
	// (auto-resume or 502), rather than reaching the agent on a cached route.
	s.forgetRoute(id)
	host, err := s.store.Host(ctx, sb.HostID)
	if err != nil {
		s.setState(ctx, id, store.StateRunning, nil)
		return fmt.Errorf("pause %s: host %s: %w", id, sb.HostID, err)
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.CreateTimeout)
	defer cancel()
	res, err := s.agents.client(host).Pause(actx, connect.NewRequest(&pb.PauseRequest{SandboxId: id, FilesystemOnly: fsOnly}))
	if err != nil {
		s.setState(ctx, id, store.StateRunning, nil)
		if connect.CodeOf(err) == connect.CodeUnimplemented {
			return errorf(http.StatusNotImplemented, "pause %s: %s", id, connectMessage(err))
		}
		return fmt.Errorf("pause %s: %w", id, err)
	}
	s.forgetRoute(id)
	s.addReleased(host.ID, sb)
	manifest := res.Msg.GetSandbox().GetSnapshotManifest()
	if _, err := s.setState(ctx, id, store.StatePaused, func(x *store.Sandbox) {
		x.PausedFilesystemOnly, x.SnapshotManifest = fsOnly, manifest
	}); err != nil {
		return err
	}
	if fsOnly {
		s.events.add(id, "info", "sandbox paused (filesystem only)")
	} else {
		s.events.add(id, "info", "sandbox paused")
	}
	return nil
}

// resume restores a paused sandbox and sets its deadline: on its own host when that is
// ready and not draining; otherwise, when its paused state is in the agents' artifacts store
// (SnapshotManifest), on another host placed as a create is, which fetches it, and the old
// host is told to drop its copy. A draining host holding the only copy still resumes it; a
// down one cannot (503), and the sandbox stays paused.
func (s *Server) resume(ctx context.Context, id string, ttl time.Duration, autoPause *bool) (store.Sandbox, error) {
	sb, err := s.transition(ctx, id, "resume", []string{store.StatePaused}, store.StateResuming)
	if err != nil {
		return store.Sandbox{}, err
	}
	home, herr := s.store.Host(ctx, sb.HostID)
	homeReady := herr == nil && home.State == store.HostReady
	homeUsable := homeReady && !home.Draining && time.Since(home.LastHeartbeat) <= s.cfg.HostDeadAfter
	actx, cancel := context.WithTimeout(ctx, s.cfg.CreateTimeout)
	defer cancel()
	target, moved := home, false
	var moveErr error
	if !homeUsable && sb.SnapshotManifest != "" {
		target, moveErr = s.resumeElsewhere(actx, sb)
		moved = moveErr == nil
		if errors.Is(moveErr, errMoveUnsettled) {
			s.setState(ctx, id, store.StatePaused, nil)
			return store.Sandbox{}, errorf(http.StatusServiceUnavailable, "sandbox %s could not resume on another host: %v; it is still paused", id, moveErr)
		}
	}
	if !moved {
		if !homeReady {
			s.setState(ctx, id, store.StatePaused, nil)
			why := "its snapshot is on that host only (agents share paused sandboxes through --artifacts)"
			if moveErr != nil {
				why = fmt.Sprintf("and no other host could take it: %v", moveErr)
			}
			return store.Sandbox{}, errorf(http.StatusServiceUnavailable, "sandbox %s is paused on host %s, which is not available; %s", id, sb.HostID, why)
		}
		if moveErr != nil {
			s.log.Warn("resume on another host failed; resuming on the sandbox's own host", "sandbox", id, "host", home.ID, "err", moveErr)
		}
		if _, err := s.agents.client(home).Resume(actx, connect.NewRequest(&pb.ResumeRequest{SandboxId: id, SnapshotManifest: sb.SnapshotManifest})); err != nil {
			s.setState(ctx, id, store.StatePaused, nil)
			return store.Sandbox{}, fmt.Errorf("resume %s: %w", id, err)
		}
		// Running again: it counts on its host until the next heartbeat reports it (its
		// pause released it, addReleased).
		s.addPending(home.ID, demand{memMiB: sb.MemoryMiB, cpus: sb.CPUs})
	}
	sb, err = s.setState(ctx, id, store.StateRunning, func(x *store.Sandbox) {
		x.EndAt = time.Now().UTC().Add(ttl)
		x.PausedFilesystemOnly = false
		x.HostID, x.SnapshotManifest = target.ID, ""
		if autoPause != nil {
			x.AutoPause = *autoPause
		}
	})
	if err != nil {
		return store.Sandbox{}, err
	}
	from := home.ID
	if herr != nil {
		from = "an unknown host"
	}
	if moved {
		s.log.Info("sandbox resumed on another host", "sandbox", id, "from", from, "to", target.ID)
		s.events.add(id, "info", fmt.Sprintf("sandbox resumed on host %s (moved from %s, which is %s)", target.ID, from, hostCondition(home, herr)))
		// The old host's paused copy is stale now. A host that is up (read again: it may
		// have come back during the move, after its reconcile) drops it at once; one that is
		// down drops it when it is back (reconcileHost: the sandbox is no longer its).
		if h, err := s.store.Host(ctx, from); err == nil && h.State == store.HostReady {
			go s.dropCopy(h, id)
		}
	} else {
		s.events.add(id, "info", "sandbox resumed")
	}
	return sb, nil
}

// errMoveUnsettled: an agent asked to resume a moving sandbox failed in a way that does not
// say the sandbox is not running there (a timeout, a lost connection), so resuming it
// anywhere else could run it twice.
var errMoveUnsettled = errors.New("the resume on another host did not settle")

// maxMoveTries bounds the hosts a move tries (each one that lacks the template build refuses
// quickly).
const maxMoveTries = 3

// resumeElsewhere resumes paused sandbox sb on the least loaded other host that takes it,
// which fetches its snapshot by the manifest's digest. Hosts that refuse (no such template
// build, full) are skipped.
func (s *Server) resumeElsewhere(ctx context.Context, sb store.Sandbox) (store.Host, error) {
	d := demand{memMiB: sb.MemoryMiB, cpus: sb.CPUs}
	hosts, err := s.candidates(ctx, d)
	if err != nil {
		return store.Host{}, err
	}
	var errs []error
	tries := 0
	for _, h := range hosts {
		if h.ID == sb.HostID {
			continue
		}
		if tries++; tries > maxMoveTries {
			break
		}
		s.addPending(h.ID, d)
		_, err := s.agents.client(h).Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: sb.ID, SnapshotManifest: sb.SnapshotManifest}))
		if err == nil {
			return h, nil
		}
		switch connect.CodeOf(err) {
		case connect.CodeFailedPrecondition, connect.CodeResourceExhausted, connect.CodeInvalidArgument, connect.CodeUnimplemented:
			// Refused before anything ran: nothing of the sandbox runs there.
			errs = append(errs, fmt.Errorf("host %s: %s", h.ID, connectMessage(err)))
			continue
		}
		// It may still come up there: have it dropped (reconcile would, too) and move on
		// no further.
		go s.dropCopy(h, sb.ID)
		return store.Host{}, fmt.Errorf("%w: host %s: %v", errMoveUnsettled, h.ID, err)
	}
	if len(errs) == 0 {
		return store.Host{}, fmt.Errorf("%w: no other host is ready", errNoCapacity)
	}
	return store.Host{}, errors.Join(errs...)
}

// dropCopy destroys what host h holds of a sandbox that now lives elsewhere (or nowhere).
func (s *Server) dropCopy(h store.Host, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.cfg.CreateTimeout)
	defer cancel()
	for {
		_, err := s.agents.client(h).Destroy(ctx, connect.NewRequest(&pb.DestroyRequest{SandboxId: id}))
		if err == nil || connect.CodeOf(err) == connect.CodeNotFound {
			s.log.Info("dropped stale copy of a moved sandbox", "sandbox", id, "host", h.ID)
			return
		}
		// Busy (a resume there still finishing): ask again once it has settled.
		if connect.CodeOf(err) != connect.CodeFailedPrecondition {
			s.log.Warn("drop stale copy of a moved sandbox; reconcile drops it later", "sandbox", id, "host", h.ID, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			s.log.Warn("drop stale copy of a moved sandbox; reconcile drops it later", "sandbox", id, "host", h.ID, "err", err)
			return
		case <-time.After(2 * time.Second):
		}
	}
}

func hostCondition(h store.Host, err error) string {
	switch {
	case err != nil:
		return "unknown"
	case h.State != store.HostReady:
		return h.State
	case h.Draining:
		return "draining"
	default:
		return "not answering heartbeats"
	}
}

func (s *Server) resumeSandbox(w http.ResponseWriter, r *http.Request) {
	var body api.ResumeBody
	if err := decode(r, &body); err != nil {
		fail(w, err)
		return
	}
	ttl, err := s.timeoutFor(body.Timeout)
	if err != nil {
		fail(w, err)
		return
	}
	sb, err := s.resume(r.Context(), r.PathValue("id"), ttl, body.AutoPause)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.sandboxResponse(sb))
}

// connectSandbox returns a running sandbox (extending its deadline, never shortening it) or
// resumes a paused one.
func (s *Server) connectSandbox(w http.ResponseWriter, r *http.Request) {
	var body api.TimeoutBody
	if err := decode(r, &body); err != nil {
		fail(w, err)
		return
	}
	ttl, err := s.timeoutFor(body.Timeout)
	if err != nil {
		fail(w, err)
		return
	}
	id := r.PathValue("id")
	sb, err := s.store.UpdateSandbox(r.Context(), id, func(x *store.Sandbox) error {
		if x.State == store.StateRunning {
			x.EndAt = laterOf(x.EndAt, time.Now().UTC().Add(ttl))
		}
		return nil
	})
	if err != nil {
		fail(w, sandboxErr(id, err))
		return
	}
	switch sb.State {
	case store.StateRunning:
		writeJSON(w, http.StatusOK, s.sandboxResponse(sb))
	case store.StatePaused:
		sb, err := s.resumeOnce(r.Context(), id, ttl)
		if err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, s.sandboxResponse(sb))
	case store.StateLost:
		fail(w, lostErr(sb, "connect to"))
	default:
		fail(w, busy(id, sb.State, "connect to"))
	}
}
