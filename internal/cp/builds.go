package cp

// Template builds through the API, as E2B's Template SDK drives them (build system v2):
//
//	POST /v3/templates                                  → 202 {templateID, buildID, ...} (waiting)
//	GET  /templates/{templateID}/files/{hash}           → 201 {present, url}: the SDK PUTs a tar there
//	PUT  /hearth/v1/uploads/{templateID}/{hash}?...     ← the archive (HMAC-signed URL, any 2xx)
//	POST /v2/templates/{templateID}/builds/{buildID}    → 202 (building); an agent builds it
//	GET  /templates/{templateID}/builds/{buildID}/status?logsOffset=N → status, log entries, reason
//	GET  /templates/aliases/{alias}                     → 200 {templateID, public} | 404
//
// A build runs on one agent (BuildTemplate), which keeps it as a version of its own (see
// tags.go): sandboxes of it are placed on that host, or on another agent that fetches the
// version from the artifacts store.

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-containerregistry/pkg/name"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/template"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// Limits of API builds.
const (
	// maxUploadBytes caps one COPY archive, and maxBuildFilesBytes all of one build's: the
	// archives travel to the agent in the build request.
	maxUploadBytes     = 256 << 20
	maxBuildFilesBytes = 512 << 20
	maxBuildSteps      = 1000
	uploadURLLifetime  = time.Hour
	// buildRunTimeout bounds one build on its agent.
	buildRunTimeout = 2 * time.Hour
	// logFlushEvery and logFlushLines batch log entries into the store.
	logFlushEvery = 200 * time.Millisecond
	logFlushLines = 50
	// baseImage is what the SDK's default (and fromBaseImage) asks for: Hearth's base.
	baseImage    = "e2bdev/base"
	baseTemplate = "base"
	supersededBy = "The build was canceled because it was superseded by a newer one."
	// buildLeaseEvery is how often a running build's record is touched; one untouched for
	// buildLeaseExpiry has no control plane following it any more.
	buildLeaseEvery  = 20 * time.Second
	buildLeaseExpiry = 2 * time.Minute
)

var (
	hashRE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	uuidRE  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	tagRE   = regexp.MustCompile(`^[a-z0-9-_.]+$`)
	stepSet = map[string]bool{"RUN": true, "COPY": true, "ENV": true, "WORKDIR": true, "USER": true}
)

// templateName is a parsed `[namespace/]alias[:tag]`.
type templateName struct {
	alias, tag string
}

// parseTemplateName lower-cases and trims name and splits it, as E2B's ParseName does. Hearth
// has no namespaces yet; an alias must be a Hearth template name. No tag means "default".
func parseTemplateName(name string) (templateName, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" {
		return templateName{}, errorf(http.StatusBadRequest, "Name is required")
	}
	rest := name
	if i := strings.Index(rest, "/"); i >= 0 {
		return templateName{}, errorf(http.StatusBadRequest, "Invalid name: %q: Hearth has no namespaces; give the template name alone", name)
	}
	var n templateName
	n.alias, n.tag, _ = strings.Cut(rest, ":")
	if err := template.CheckName(n.alias); err != nil {
		return templateName{}, errorf(http.StatusBadRequest, "Invalid name: %q: want %s", n.alias, template.NameForm)
	}
	if err := checkTag(n.tag, strings.Contains(rest, ":")); err != nil {
		return templateName{}, err
	}
	if n.tag == "" {
		n.tag = "default"
	}
	return n, nil
}

// checkTag checks a tag's form (B7): lower-case letters, digits, '-', '_' and '.', not a
// UUID. given says a ':' or a tags entry was there, so an empty tag is an error.
func checkTag(tag string, given bool) error {
	switch {
	case given && tag == "":
		return errorf(http.StatusBadRequest, "Invalid tag: empty tag")
	case tag == "":
		return nil
	case !tagRE.MatchString(tag) || uuidRE.MatchString(tag):
		return errorf(http.StatusBadRequest, "Invalid tag: %q: want lower-case letters, digits, '-', '_' and '.', and not a UUID", tag)
	}
	return nil
}

// newBuildID returns a random UUID v4.
func newBuildID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// apiManaged reports whether template t is built through the API (it has build records),
// as opposed to one an agent builds itself and reports in heartbeats (`base`).
func (s *Server) apiManaged(ctx context.Context, id string) (bool, error) {
	bs, err := s.store.ListTemplateBuilds(ctx, id)
	return len(bs) > 0, err
}

// buildsAllowed refuses API builds to every team but the operator's: a build's RUN steps run
// in a hardened chroot on the agent host that shares the host's network (they can reach its
// loopback services), which is not a boundary for untrusted keys. Builds open to every team
// once they run inside a sandbox.
func buildsAllowed(ctx context.Context) error {
	if teamOf(ctx) != store.DefaultTeam {
		return errorf(http.StatusForbidden, "template builds through the API are open to the operator's team (\"default\") only for now: their steps run on the agent host's network, outside a sandbox; ask the operator to build the template")
	}
	return nil
}

func (s *Server) requestTemplateBuild(w http.ResponseWriter, r *http.Request) {
	if err := buildsAllowed(r.Context()); err != nil {
		fail(w, err)
		return
	}
	var req api.TemplateBuildRequestV3
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	if req.Name == "" {
		req.Name = req.Alias
	}
	n, err := parseTemplateName(req.Name)
	if err != nil {
		fail(w, err)
		return
	}
	tags, err := buildTags(n, req.Tags)
	if err != nil {
		fail(w, err)
		return
	}
	cpus, mem := 2, 1024
	if req.CPUCount != nil {
		cpus = *req.CPUCount
	}
	if req.MemoryMB != nil {
		mem = *req.MemoryMB
	}
	if cpus < 1 || cpus > 32 || (cpus != 1 && cpus%2 != 0) {
		fail(w, errorf(http.StatusBadRequest, "CPU count must be 1 or an even number from 2 to 32, got %d", cpus))
		return
	}
	if mem < 128 || mem%2 != 0 {
		fail(w, errorf(http.StatusBadRequest, "Memory must be an even number of MiB of at least 128, got %d", mem))
		return
	}
	ctx := r.Context()
	now := time.Now().UTC()
	tpl, err := s.store.Template(ctx, n.alias)
	switch {
	case errors.Is(err, store.ErrNotFound):
		tpl = store.Template{ID: newSandboxID(), TeamID: teamOf(ctx), Aliases: []string{n.alias}, CPUs: cpus, MemoryMiB: mem,
			BuildStatus: store.BuildWaiting, CreatedAt: now, UpdatedAt: now}
		if err := s.store.PutTemplate(ctx, tpl); err != nil {
			fail(w, err)
			return
		}
	case err != nil:
		fail(w, err)
		return
	case tpl.TeamID != teamOf(ctx):
		fail(w, errorf(http.StatusConflict, "template name %q is taken: pick another", n.alias))
		return
	default:
		managed, err := s.apiManaged(ctx, tpl.ID)
		if err != nil {
			fail(w, err)
			return
		}
		if !managed || tpl.ID == n.alias {
			fail(w, errorf(http.StatusConflict, "template %q is built on the agents (`hearth template build %s`), not through the API: pick another name", n.alias, n.alias))
			return
		}
	}
	b := store.TemplateBuild{ID: newBuildID(), TeamID: teamOf(ctx), TemplateID: tpl.ID, Status: store.BuildWaiting, CPUs: cpus, MemoryMiB: mem,
		Tags: tags, CreatedAt: now, UpdatedAt: now}
	// Each build is a version of its own on the agents, which no later build replaces.
	b.AgentTemplate = versionName(tpl.ID, b.ID)
	s.supersedeWaiting(ctx, tpl.ID)
	if err := s.store.CreateTemplateBuild(ctx, b); err != nil {
		fail(w, err)
		return
	}
	s.log.Info("template build requested", "template", tpl.ID, "alias", n.alias, "build", b.ID)
	writeJSON(w, http.StatusAccepted, api.TemplateRequestResponseV3{
		TemplateID: tpl.ID, BuildID: b.ID, Public: tpl.Public,
		Names: []string{n.alias}, Tags: tags, Aliases: []string{n.alias},
	})
}

// supersedeWaiting fails the template's builds that were requested but never started.
func (s *Server) supersedeWaiting(ctx context.Context, templateID string) {
	bs, err := s.store.ListTemplateBuilds(ctx, templateID)
	if err != nil {
		s.log.Warn("list template builds", "template", templateID, "err", err)
		return
	}
	for _, b := range bs {
		if b.Status != store.BuildWaiting {
			continue
		}
		_, _ = s.store.UpdateTemplateBuild(ctx, b.ID, func(x *store.TemplateBuild) error {
			if x.Status != store.BuildWaiting {
				return nil
			}
			x.Status, x.Reason, x.FinishedAt = store.BuildError, supersededBy, time.Now().UTC()
			return nil
		})
	}
}

// apiTemplate returns the API-built template templateID (404 otherwise).
func (s *Server) apiTemplate(ctx context.Context, templateID string) (store.Template, error) {
	if template.CheckName(templateID) != nil {
		return store.Template{}, errorf(http.StatusNotFound, "template %q not found", templateID)
	}
	tpl, err := s.visibleTemplate(ctx, templateID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (tpl.ID != templateID || tpl.TeamID != teamOf(ctx))) {
		return store.Template{}, errorf(http.StatusNotFound, "template %q not found", templateID)
	}
	if err != nil {
		return store.Template{}, err
	}
	managed, err := s.apiManaged(ctx, tpl.ID)
	if err != nil {
		return store.Template{}, err
	}
	if !managed {
		return store.Template{}, errorf(http.StatusNotFound, "template %q is not built through the API", templateID)
	}
	return tpl, nil
}

// filePath is where the uploaded archive hash of a template is kept.
func (s *Server) filePath(templateID, hash string) string {
	return filepath.Join(s.cfg.BuildFilesDir, templateID, hash+".tar")
}

func (s *Server) uploadSignature(templateID, hash string, expires int64) string {
	key := sha256.Sum256([]byte("hearth build upload\x00" + s.uploadKey))
	m := hmac.New(sha256.New, key[:])
	fmt.Fprintf(m, "%s\x00%s\x00%d", templateID, hash, expires)
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Server) templateFile(w http.ResponseWriter, r *http.Request) {
	templateID, hash := r.PathValue("templateID"), r.PathValue("hash")
	if !hashRE.MatchString(hash) {
		fail(w, errorf(http.StatusBadRequest, "Invalid files hash: want 64 lower-case hex digits"))
		return
	}
	if _, err := s.apiTemplate(r.Context(), templateID); err != nil {
		fail(w, err)
		return
	}
	_, err := os.Stat(s.filePath(templateID, hash))
	expires := time.Now().Add(uploadURLLifetime).Unix()
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	u := url.URL{Scheme: scheme, Host: r.Host, Path: "/hearth/v1/uploads/" + templateID + "/" + hash,
		RawQuery: url.Values{"expires": {strconv.FormatInt(expires, 10)}, "token": {s.uploadSignature(templateID, hash, expires)}}.Encode()}
	writeJSON(w, http.StatusCreated, api.TemplateBuildFileUpload{Present: err == nil, URL: u.String()})
}

// uploadFile takes a COPY archive PUT to a signed URL from templateFile. It is outside
// limitBodies (archives are large) and needs no API key: the signature is the credential.
func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request) {
	templateID, hash := r.PathValue("templateID"), r.PathValue("hash")
	q := r.URL.Query()
	expires, err := strconv.ParseInt(q.Get("expires"), 10, 64)
	if err != nil || !hashRE.MatchString(hash) || template.CheckName(templateID) != nil ||
		!hmac.Equal([]byte(q.Get("token")), []byte(s.uploadSignature(templateID, hash, expires))) {
		writeError(w, http.StatusForbidden, "invalid upload URL: ask GET /templates/{templateID}/files/{hash} for a new one")
		return
	}
	if time.Now().Unix() > expires {
		writeError(w, http.StatusForbidden, "upload URL expired: ask GET /templates/{templateID}/files/{hash} for a new one")
		return
	}
	dst := s.filePath(templateID, hash)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		fail(w, err)
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".upload-*")
	if err != nil {
		fail(w, err)
		return
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, http.MaxBytesReader(w, r.Body, maxUploadBytes))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("archive over %d MiB: copy fewer files at once", maxUploadBytes>>20))
		return
	}
	if err != nil {
		fail(w, fmt.Errorf("receive archive: %w", err))
		return
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		fail(w, err)
		return
	}
	s.log.Info("build files uploaded", "template", templateID, "hash", hash[:12], "bytes", n)
	w.WriteHeader(http.StatusOK)
}

// baseOf maps the build's base to a template on the agents or an OCI image: fromTemplate
// names a template; fromImage e2bdev/base (the SDK's default) is Hearth's base; any other
// fromImage is an image the agent pulls, returned as image.
func (s *Server) baseOf(ctx context.Context, req api.TemplateBuildStartV2) (base resolved, image string, err error) {
	switch {
	case req.FromTemplate != "" && req.FromImage != "":
		return resolved{}, "", errorf(http.StatusBadRequest, "give fromImage or fromTemplate, not both")
	case req.FromTemplate != "":
		// name:tag starts from the build the tag points at; the bare name from the default's.
		r, err := s.resolveTemplate(ctx, req.FromTemplate)
		var he *httpError
		if errors.As(err, &he) && he.status == http.StatusNotFound {
			return resolved{}, "", errorf(http.StatusBadRequest, "base template %q not found: build it first, or start from 'base' (fromTemplate('base') or fromBaseImage()); %s", req.FromTemplate, he.msg)
		}
		if err != nil {
			return resolved{}, "", err
		}
		if r.build == nil && r.tpl.BuildStatus != store.BuildReady {
			return resolved{}, "", errorf(http.StatusBadRequest, "error getting base template, you may need to rebuild it first: %q has no ready build (status %s)", req.FromTemplate, r.tpl.BuildStatus)
		}
		return r, "", nil
	case req.FromImage == "" || baseImages[strings.TrimSuffix(req.FromImage, ":latest")]:
		tpl, err := s.visibleTemplate(ctx, baseTemplate)
		if errors.Is(err, store.ErrNotFound) {
			return resolved{}, "", errorf(http.StatusServiceUnavailable, "no agent has built the base template yet (`hearth template build base`)")
		}
		return resolved{tpl: tpl}, "", err
	default:
		if _, err := name.ParseReference(req.FromImage, name.WeakValidation); err != nil {
			return resolved{}, "", errorf(http.StatusBadRequest, "fromImage %q is not a valid image reference: %v", req.FromImage, err)
		}
		return resolved{}, req.FromImage, nil
	}
}

// baseImages are the names of E2B's base image, which is Hearth's base template.
var baseImages = map[string]bool{baseImage: true, "docker.io/" + baseImage: true, "index.docker.io/" + baseImage: true}

// registryCredentials parses fromImageRegistry. Only the generic registry type (a username
// and password, which fromImage(ref, {username, password}) sends) is supported: the AWS and
// GCP types need those clouds' token exchanges, which Hearth does not do.
func registryCredentials(raw json.RawMessage) (*api.RegistryConfig, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var a api.RegistryConfig
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, errorf(http.StatusBadRequest, "fromImageRegistry: %v", err)
	}
	switch a.Type {
	case "registry":
		if a.Username == "" || a.Password == "" {
			return nil, errorf(http.StatusBadRequest, "fromImageRegistry: both username and password are required")
		}
		return &a, nil
	case "aws", "gcp":
		helper := map[string]string{"aws": "fromAWSRegistry", "gcp": "fromGCPRegistry"}[a.Type]
		return nil, errorf(http.StatusBadRequest, "fromImageRegistry type %q (%s) is not supported: Hearth pulls with a username and password only (type \"registry\", sent by fromImage(ref, {username, password})); %s", a.Type, helper, cloudLogin[a.Type])
	default:
		return nil, errorf(http.StatusBadRequest, "fromImageRegistry type %q is not supported: Hearth supports type \"registry\" (a username and password)", a.Type)
	}
}

// cloudLogin says how to reach each cloud's registry with a username and password.
var cloudLogin = map[string]string{
	"aws": "for Amazon ECR use fromImage(ref, {username: 'AWS', password: <the output of aws ecr get-login-password>})",
	"gcp": "for Google Artifact Registry use fromImage(ref, {username: '_json_key', password: <the service account JSON>})",
}

// redactedRecipe is the build's recipe as stored: without the registry password.
func redactedRecipe(req api.TemplateBuildStartV2, auth *api.RegistryConfig) []byte {
	if auth != nil {
		r := *auth
		r.Password = "(redacted)"
		req.FromImageRegistry, _ = json.Marshal(r)
	}
	b, _ := json.Marshal(req)
	return b
}

func (s *Server) startTemplateBuild(w http.ResponseWriter, r *http.Request) {
	if err := buildsAllowed(r.Context()); err != nil {
		fail(w, err)
		return
	}
	templateID, buildID := r.PathValue("templateID"), r.PathValue("buildID")
	if !uuidRE.MatchString(buildID) {
		fail(w, errorf(http.StatusBadRequest, "Invalid build ID: want a UUID"))
		return
	}
	ctx := r.Context()
	tpl, err := s.apiTemplate(ctx, templateID)
	if err != nil {
		fail(w, err)
		return
	}
	b, err := s.store.TemplateBuild(ctx, buildID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && b.TemplateID != tpl.ID) {
		fail(w, errorf(http.StatusNotFound, "build %s of template %s not found", buildID, templateID))
		return
	} else if err != nil {
		fail(w, err)
		return
	}
	if b.Status != store.BuildWaiting {
		fail(w, errorf(http.StatusBadRequest, "build is not in waiting state (it is %s)", b.Status))
		return
	}
	var req api.TemplateBuildStartV2
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	rpc, err := s.buildRequest(ctx, tpl, b, req)
	if err != nil {
		// The build cannot run as asked: it fails now, with the reason at its base.
		s.finishBuild(context.WithoutCancel(ctx), b.ID, "", &pb.BuildResult{Error: err.Error(), ErrorStep: template.PhaseBase})
		fail(w, err)
		return
	}
	host, err := s.buildHost(ctx, tpl, b)
	if err != nil {
		s.finishBuild(context.WithoutCancel(ctx), b.ID, "", &pb.BuildResult{Error: err.Error(), ErrorStep: template.PhaseBase})
		fail(w, err)
		return
	}
	auth, _ := registryCredentials(req.FromImageRegistry) // buildRequest checked it
	recipe := redactedRecipe(req, auth)
	started := false
	if _, err := s.store.UpdateTemplateBuild(ctx, b.ID, func(x *store.TemplateBuild) error {
		if x.Status != store.BuildWaiting {
			return errorf(http.StatusBadRequest, "build is not in waiting state (it is %s)", x.Status)
		}
		x.Status, x.HostID, x.Recipe = store.BuildBuilding, host.ID, string(recipe)
		started = true
		return nil
	}); err != nil || !started {
		fail(w, err)
		return
	}
	s.log.Info("template build started", "template", tpl.ID, "build", b.ID, "host", host.ID, "steps", len(req.Steps))
	go s.runBuild(host, b.ID, rpc)
	w.WriteHeader(http.StatusAccepted)
}

// buildRequest checks the recipe and turns it into the agent's request, archives included.
func (s *Server) buildRequest(ctx context.Context, tpl store.Template, b store.TemplateBuild, req api.TemplateBuildStartV2) (*pb.BuildTemplateRequest, error) {
	auth, err := registryCredentials(req.FromImageRegistry)
	if err != nil {
		return nil, err
	}
	base, image, err := s.baseOf(ctx, req)
	if err != nil {
		return nil, err
	}
	if image == "" && auth != nil {
		return nil, errorf(http.StatusBadRequest, "fromImageRegistry goes with fromImage: %s is a Hearth template, pulled from no registry", base.tpl.ID)
	}
	if image == "" && base.tpl.ID == tpl.ID && base.build == nil {
		return nil, errorf(http.StatusBadRequest, "a template cannot start from itself")
	}
	if len(req.Steps) > maxBuildSteps {
		return nil, errorf(http.StatusBadRequest, "%d steps: at most %d", len(req.Steps), maxBuildSteps)
	}
	rpc := &pb.BuildTemplateRequest{
		TemplateId: b.AgentName(), FromImage: image, StartCmd: req.StartCmd, ReadyCmd: req.ReadyCmd,
		Cpus: uint32(b.CPUs), MemoryMib: uint32(b.MemoryMiB),
	}
	if image == "" {
		rpc.FromTemplate = base.agentName()
	}
	if auth != nil {
		rpc.RegistryUsername, rpc.RegistryPassword = auth.Username, auth.Password
	}
	if req.ReadyCmd != "" && req.StartCmd == "" {
		// E2B runs a ready command alone too; here it is only checked at the start snapshot,
		// which a template without a start command does not take.
		rpc.StartCmd = "true"
	}
	seen := map[string]bool{}
	var total int64
	for i, st := range req.Steps {
		if !stepSet[st.Type] {
			return nil, errorf(http.StatusBadRequest, "step %d: unknown step type %q (supported: RUN, COPY, ENV, WORKDIR, USER)", i+1, st.Type)
		}
		rpc.Steps = append(rpc.Steps, &pb.BuildStep{Type: st.Type, Args: st.Args, FilesHash: st.FilesHash})
		if st.Type != "COPY" {
			continue
		}
		if !hashRE.MatchString(st.FilesHash) {
			return nil, errorf(http.StatusBadRequest, "step %d: COPY requires files hash to be set (64 hex digits)", i+1)
		}
		if seen[st.FilesHash] {
			continue
		}
		seen[st.FilesHash] = true
		data, err := os.ReadFile(s.filePath(tpl.ID, st.FilesHash))
		if errors.Is(err, os.ErrNotExist) {
			return nil, errorf(http.StatusBadRequest, "step %d: the files of COPY %s (hash %s) were not uploaded", i+1, strings.Join(st.Args, " "), st.FilesHash)
		}
		if err != nil {
			return nil, fmt.Errorf("read build files: %w", err)
		}
		if total += int64(len(data)); total > maxBuildFilesBytes {
			return nil, errorf(http.StatusBadRequest, "the COPY steps' archives add up to over %d MiB", maxBuildFilesBytes>>20)
		}
		rpc.Files = append(rpc.Files, &pb.BuildFile{Hash: st.FilesHash, Data: data})
	}
	return rpc, nil
}

// buildHost picks the agent that builds b: the one holding the base if it is an API
// template (templates are not copied between hosts), else the one with the template's
// previous build, else any with room.
func (s *Server) buildHost(ctx context.Context, tpl store.Template, b store.TemplateBuild) (store.Host, error) {
	want := ""
	if prev, err := s.store.ListTemplateBuilds(ctx, tpl.ID); err == nil {
		for _, p := range prev {
			if p.Status == store.BuildReady && p.HostID != "" {
				want = p.HostID
				break
			}
		}
	}
	return s.placeOn(ctx, b.MemoryMiB, want)
}

// placeOn places on host hostID when it is given and ready, else anywhere.
func (s *Server) placeOn(ctx context.Context, memMiB int, hostID string) (store.Host, error) {
	if hostID != "" {
		if h, err := s.store.Host(ctx, hostID); err == nil && h.State == store.HostReady && time.Since(h.LastHeartbeat) <= s.cfg.HostDeadAfter {
			return h, nil
		}
	}
	return s.place(ctx, demand{memMiB: memMiB})
}

// runBuild streams build buildID from its agent into the store and records the result.
func (s *Server) runBuild(host store.Host, buildID string, req *pb.BuildTemplateRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), buildRunTimeout)
	defer cancel()
	// The build's record is touched while this control plane follows it: a build whose
	// record goes stale was being followed by one that stopped (see expireBuild).
	go func() {
		t := time.NewTicker(buildLeaseEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_, _ = s.store.UpdateTemplateBuild(ctx, buildID, func(*store.TemplateBuild) error { return nil })
			}
		}
	}()
	stream, err := s.agents.client(host).BuildTemplate(ctx, connect.NewRequest(req))
	if err != nil {
		s.finishBuild(ctx, buildID, host.ID, &pb.BuildResult{Error: fmt.Sprintf("build on host %s: %v", host.ID, err)})
		return
	}
	defer stream.Close()
	var (
		batch     []store.BuildLogEntry
		seq       int
		lastFlush = time.Now()
		result    *pb.BuildResult
	)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if err := s.store.AppendBuildLogs(ctx, buildID, batch); err != nil {
			s.log.Warn("store build log", "build", buildID, "err", err)
		}
		batch, lastFlush = batch[:0], time.Now()
	}
	for stream.Receive() {
		m := stream.Msg()
		if l := m.GetLog(); l != nil {
			batch = append(batch, store.BuildLogEntry{Seq: seq, Time: l.GetTimestamp().AsTime().UTC(), Level: l.GetLevel(), Step: l.GetStep(), Message: l.GetMessage()})
			seq++
		}
		if m.GetResult() != nil {
			result = m.GetResult()
		}
		if len(batch) >= logFlushLines || time.Since(lastFlush) >= logFlushEvery {
			flush()
		}
	}
	flush()
	if result == nil {
		err := stream.Err()
		if err == nil {
			err = errors.New("the agent ended the build without a result")
		}
		result = &pb.BuildResult{Error: fmt.Sprintf("build on host %s: %v", host.ID, err)}
	}
	s.finishBuild(ctx, buildID, host.ID, result)
}

// finishBuild records a build's end and, when it succeeded, makes it the template's build.
// A failed build leaves the template as it was: its previous good build stays in use.
func (s *Server) finishBuild(ctx context.Context, buildID, hostID string, res *pb.BuildResult) {
	now := time.Now().UTC()
	// A good build is reported ready last, once its tags and the template point at it: the
	// SDKs create from the name as soon as the status says ready, and the name's tag must be
	// there by then.
	b, err := s.store.UpdateTemplateBuild(ctx, buildID, func(x *store.TemplateBuild) error {
		x.FinishedAt = now
		if hostID != "" {
			x.HostID = hostID
		}
		if res.GetError() != "" {
			x.Status, x.Reason, x.ReasonStep = store.BuildError, res.GetError(), res.GetErrorStep()
		} else {
			x.Version = res.GetVersion()
		}
		return nil
	})
	if err != nil {
		s.log.Warn("record build result", "build", buildID, "err", err)
		return
	}
	if b.Status != store.BuildError {
		defer func() {
			if _, err := s.store.UpdateTemplateBuild(ctx, buildID, func(x *store.TemplateBuild) error {
				x.Status = store.BuildReady
				return nil
			}); err != nil {
				s.log.Warn("record build result", "build", buildID, "err", err)
			}
		}()
	}
	tpl, err := s.store.Template(ctx, b.TemplateID)
	if err != nil {
		s.log.Warn("record build result", "build", buildID, "template", b.TemplateID, "err", err)
		return
	}
	if b.Status == store.BuildError {
		s.log.Info("template build failed", "template", tpl.ID, "build", b.ID, "step", b.ReasonStep, "reason", b.Reason)
		if tpl.BuildStatus == store.BuildReady {
			return
		}
		tpl.BuildStatus = store.BuildError
	} else {
		s.log.Info("template build ready", "template", tpl.ID, "build", b.ID, "host", b.HostID, "tags", b.Tags)
		tags := b.Tags
		if len(tags) == 0 {
			tags = []string{store.DefaultTag}
		}
		if err := s.tagBuild(ctx, b, tags); err != nil {
			s.log.Warn("tag ready build", "build", b.ID, "err", err)
		}
		tpl.BuildID, tpl.BuildStatus, tpl.EnvdVersion = b.ID, store.BuildReady, res.GetEnvdVersion()
		tpl.CPUs, tpl.MemoryMiB, tpl.DiskMiB = b.CPUs, b.MemoryMiB, int(res.GetDiskMib())
	}
	tpl.UpdatedAt = now
	if err := s.store.PutTemplate(ctx, tpl); err != nil {
		s.log.Warn("record build result", "template", tpl.ID, "err", err)
	}
}

// logLevels orders the levels for the status endpoint's level filter.
var logLevels = map[string]int{"debug": 0, "info": 1, "warn": 2, "error": 3}

func (s *Server) templateBuildStatus(w http.ResponseWriter, r *http.Request) {
	templateID, buildID := r.PathValue("templateID"), r.PathValue("buildID")
	if !uuidRE.MatchString(buildID) {
		fail(w, errorf(http.StatusBadRequest, "Invalid build ID: want a UUID"))
		return
	}
	q := r.URL.Query()
	offset, limit := 0, 100
	var err error
	if v := q.Get("logsOffset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			fail(w, errorf(http.StatusBadRequest, "logsOffset must be an integer of at least 0"))
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 || limit > 100 {
			fail(w, errorf(http.StatusBadRequest, "limit must be 0 to 100"))
			return
		}
	}
	minLevel, ok := logLevels[q.Get("level")]
	if q.Get("level") != "" && !ok {
		fail(w, errorf(http.StatusBadRequest, "level must be debug, info, warn or error"))
		return
	}
	ctx := r.Context()
	b, err := s.store.TemplateBuild(ctx, buildID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (b.TemplateID != templateID || b.TeamID != teamOf(ctx))) {
		fail(w, errorf(http.StatusBadRequest, "Build '%s' not found", buildID))
		return
	} else if err != nil {
		fail(w, err)
		return
	}
	if b.Status == store.BuildBuilding && time.Since(b.UpdatedAt) > buildLeaseExpiry {
		s.finishBuild(ctx, b.ID, "", &pb.BuildResult{Error: "the control plane that ran this build stopped before it ended: build again"})
		if b, err = s.store.TemplateBuild(ctx, buildID); err != nil {
			fail(w, err)
			return
		}
	}
	info := api.TemplateBuildInfo{TemplateID: b.TemplateID, BuildID: b.ID, Status: b.Status, LogEntries: []api.BuildLogEntry{}, Logs: []string{}}
	if limit > 0 && b.Status != store.BuildWaiting {
		entries, err := s.store.BuildLogs(ctx, b.ID, offset, limit)
		if err != nil {
			fail(w, err)
			return
		}
		for _, e := range entries {
			if logLevels[e.Level] >= minLevel {
				info.LogEntries = append(info.LogEntries, logJSON(e))
			}
		}
	}
	if b.Reason != "" {
		info.Reason = &api.BuildStatusReason{Message: b.Reason, Step: b.ReasonStep}
		if b.ReasonStep != "" {
			info.Reason.LogEntries = s.stepWarnings(ctx, b.ID, b.ReasonStep)
		}
	}
	writeJSON(w, http.StatusOK, info)
}

// stepWarnings are a build step's log entries at warn level or above (the last 1000 lines
// of the log are searched).
func (s *Server) stepWarnings(ctx context.Context, buildID, step string) []api.BuildLogEntry {
	var out []api.BuildLogEntry
	for off := 0; off < 100_000; off += 1000 {
		es, err := s.store.BuildLogs(ctx, buildID, off, 1000)
		if err != nil || len(es) == 0 {
			break
		}
		for _, e := range es {
			if e.Step == step && logLevels[e.Level] >= logLevels["warn"] {
				out = append(out, logJSON(e))
			}
		}
		if len(es) < 1000 {
			break
		}
	}
	if len(out) > 100 {
		out = out[len(out)-100:]
	}
	return out
}

func logJSON(e store.BuildLogEntry) api.BuildLogEntry {
	return api.BuildLogEntry{Timestamp: e.Time, Level: e.Level, Message: e.Message, Step: e.Step}
}

func (s *Server) templateAlias(w http.ResponseWriter, r *http.Request) {
	// With an explicit tag, the tag must exist too (404 otherwise), as on E2B.
	res, err := s.resolveTemplate(r.Context(), r.PathValue("alias"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.TemplateAliasResponse{TemplateID: res.tpl.ID, Public: res.tpl.Public})
}

// templateHost is the agent that holds the resolved version ("" for templates every agent
// builds itself), and an error when the template has no ready build.
func (s *Server) templateHost(ctx context.Context, r resolved) (string, error) {
	if r.build != nil {
		return r.build.HostID, nil
	}
	tpl := r.tpl
	if tpl.BuildStatus != "" && tpl.BuildStatus != store.BuildReady {
		return "", errorf(http.StatusBadRequest, "template %s has no ready build yet (status %s): wait for its build to finish", tpl.ID, tpl.BuildStatus)
	}
	if !uuidRE.MatchString(tpl.BuildID) {
		return "", nil
	}
	b, err := s.store.TemplateBuild(ctx, tpl.BuildID)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return b.HostID, nil
}

// placeTemplate places a sandbox: on hostID (the agent holding its API-built template) when
// given, which must be ready and have room, else anywhere.
func (s *Server) placeTemplate(ctx context.Context, d demand, hostID string) (store.Host, error) {
	if hostID == "" {
		return s.place(ctx, d)
	}
	h, err := s.store.Host(ctx, hostID)
	if err != nil {
		return store.Host{}, fmt.Errorf("%w: the template's host %s: %v", errNoCapacity, hostID, err)
	}
	if _, why := s.fits(h, d); why != "" {
		return store.Host{}, fmt.Errorf("%w: the template lives on host %s, which is %s (templates are not copied between hosts yet)", errNoCapacity, hostID, why)
	}
	return h, nil
}
