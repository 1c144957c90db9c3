package hearth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/hearthsh/hearth/sdk/go/api"
)

// Template builds through the API, as E2B's Template SDK drives them: request a build
// (POST /v3/templates), upload each COPY step's files by content hash, start it with its
// steps (POST /v2/templates/{id}/builds/{buildID}), and poll its status with a log offset
// until it ends.

// TemplateStep is one build instruction (E2B's TemplateStep): RUN [cmd, user?],
// COPY [src, dest, owner?, mode?], ENV [k, v, ...], WORKDIR [path], USER [name]. FilesHash
// names a COPY step's uploaded files; BuildTemplate fills it in from the build context when
// it is empty.
type TemplateStep = api.TemplateStep

// RegistryAuth is a username and password for pulling FromImage (E2B's registry type).
type RegistryAuth struct {
	Username string
	Password string
}

// TemplateBuild describes a build.
type TemplateBuild struct {
	// Name is the template's name (alias), optionally with ":tag".
	Name string
	Tags []string
	// CPUCount and MemoryMB size the template's sandboxes; 0 leaves them to the server
	// (2 vCPUs, 1024 MiB).
	CPUCount, MemoryMB int
	// FromTemplate or FromImage is the base; neither means E2B's base image (Hearth's base
	// template).
	FromTemplate, FromImage string
	// Registry authenticates the pull of FromImage.
	Registry *RegistryAuth
	Steps    []TemplateStep
	// StartCmd runs in the template's sandbox before its start snapshot, once ReadyCmd
	// succeeds; sandboxes of the template start with it running.
	StartCmd, ReadyCmd string
	// Force rebuilds every step.
	Force bool
	// ContextDir is where COPY sources are read from; "" is the working directory.
	ContextDir string
}

// TemplateBuildRequested answers POST /v3/templates.
type TemplateBuildRequested = api.TemplateRequestResponseV3

// BuildLogEntry is one line of a build's log. Its Step is "base", "finalize" or the 1-based
// step number the line belongs to.
type BuildLogEntry = api.BuildLogEntry

// BuildReason says why a build failed. Its Step is "base", "finalize" or the 1-based number
// of the step that failed.
type BuildReason = api.BuildStatusReason

// Build statuses.
const (
	BuildWaiting  = "waiting"
	BuildBuilding = "building"
	BuildReady    = "ready"
	BuildError    = "error"
)

// TemplateBuildStatus answers GET /templates/{id}/builds/{buildID}/status.
type TemplateBuildStatus = api.TemplateBuildInfo

// TemplateBuildError is a build that ended in error.
type TemplateBuildError struct {
	TemplateID, BuildID string
	// Step is "base", "finalize" or the 1-based number of the step that failed.
	Step    string
	Message string
}

func (e *TemplateBuildError) Error() string {
	where := "step " + e.Step
	switch e.Step {
	case "":
		where = "the build"
	case "base", "finalize":
		where = "the " + e.Step + " phase"
	}
	return fmt.Sprintf("build %s of template %s failed in %s: %s", e.BuildID, e.TemplateID, where, e.Message)
}

// TemplateFileUpload answers GET /templates/{id}/files/{hash}: whether the files are
// there already, and where to PUT them.
type TemplateFileUpload = api.TemplateBuildFileUpload

// RequestTemplateBuild creates the template on first use of its name (a later request
// rebuilds it) and a waiting build.
func (c *Client) RequestTemplateBuild(ctx context.Context, b TemplateBuild) (TemplateBuildRequested, error) {
	var out TemplateBuildRequested
	_, _, err := c.call(ctx, "request template build "+b.Name, http.MethodPost, "/v3/templates", nil,
		api.TemplateBuildRequestV3{Name: b.Name, Tags: b.Tags, CPUCount: nonZero(b.CPUCount), MemoryMB: nonZero(b.MemoryMB)},
		&out, http.StatusAccepted)
	return out, err
}

// TemplateFile says whether template templateID has the files with this hash, and where
// to upload them.
func (c *Client) TemplateFile(ctx context.Context, templateID, hash string) (TemplateFileUpload, error) {
	var out TemplateFileUpload
	_, _, err := c.call(ctx, "template files "+hash, http.MethodGet,
		"/templates/"+url.PathEscape(templateID)+"/files/"+url.PathEscape(hash), nil, nil, &out, http.StatusCreated)
	return out, err
}

// UploadTemplateFiles PUTs an archive to an upload URL from TemplateFile. The URL is the
// credential: no API key is sent.
func (c *Client) UploadTemplateFiles(ctx context.Context, uploadURL string, archive []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, uploadURL, bytes.NewReader(archive))
	if err != nil {
		return fmt.Errorf("upload template files: %w", err)
	}
	req.ContentLength = int64(len(archive))
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("upload template files: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return errorFromResponse("upload template files", resp)
	}
	return nil
}

// StartTemplateBuild starts waiting build buildID with b's base, steps and start command.
// Every COPY step must have its FilesHash, with the files uploaded.
func (c *Client) StartTemplateBuild(ctx context.Context, templateID, buildID string, b TemplateBuild) error {
	body := api.TemplateBuildStartV2{FromImage: b.FromImage, FromTemplate: b.FromTemplate, Force: b.Force,
		Steps: b.Steps, StartCmd: b.StartCmd, ReadyCmd: b.ReadyCmd}
	if body.Steps == nil {
		body.Steps = []TemplateStep{}
	}
	if b.Registry != nil {
		reg, err := json.Marshal(api.RegistryConfig{Type: "registry", Username: b.Registry.Username, Password: b.Registry.Password})
		if err != nil {
			return fmt.Errorf("start build %s: %w", buildID, err)
		}
		body.FromImageRegistry = reg
	}
	_, _, err := c.call(ctx, "start build "+buildID, http.MethodPost,
		"/v2/templates/"+url.PathEscape(templateID)+"/builds/"+url.PathEscape(buildID), nil, body, nil, http.StatusAccepted)
	return err
}

// GetTemplateBuildStatus returns a build's status and its log entries from logsOffset on
// (at most 100 an answer).
func (c *Client) GetTemplateBuildStatus(ctx context.Context, templateID, buildID string, logsOffset int) (TemplateBuildStatus, error) {
	var out TemplateBuildStatus
	q := url.Values{"logsOffset": {strconv.Itoa(logsOffset)}}
	_, _, err := c.call(ctx, "build status "+buildID, http.MethodGet,
		"/templates/"+url.PathEscape(templateID)+"/builds/"+url.PathEscape(buildID)+"/status", q, nil, &out, http.StatusOK)
	return out, err
}

// nonZero returns a pointer to n, or nil (the server's default) when n is 0; a negative n
// is sent, for the server to refuse.
func nonZero(n int) *int {
	if n == 0 {
		return nil
	}
	return &n
}

// BuildTemplateOptions observe BuildTemplate.
type BuildTemplateOptions struct {
	// OnRequested is called once the build exists, before files are uploaded.
	OnRequested func(TemplateBuildRequested)
	// OnUpload is called for each COPY step's files: uploaded, or skipped as already there.
	OnUpload func(step int, src string, uploaded bool)
	// OnLog receives every log entry once, in order.
	OnLog func(BuildLogEntry)
	// PollEvery is the pause between status polls; 0 means 200 ms, as E2B's SDK polls.
	PollEvery time.Duration
}

// BuildTemplate runs a whole build: it requests it, packs and uploads the files of every
// COPY step without a FilesHash from b.ContextDir (skipping those the server has), starts it
// and follows it until it ends, handing log entries to opts.OnLog. A build that fails
// returns its final status and a *TemplateBuildError. When ctx ends first, the build goes on
// on the server: the error says which build it was.
func (c *Client) BuildTemplate(ctx context.Context, b TemplateBuild, opts BuildTemplateOptions) (TemplateBuildStatus, error) {
	// Pack before anything is created on the server: a missing file is the caller's to fix.
	steps := append([]TemplateStep(nil), b.Steps...)
	archives := map[int][]byte{}
	for i, s := range steps {
		if s.Type != "COPY" || s.FilesHash != "" {
			continue
		}
		if len(s.Args) < 2 {
			return TemplateBuildStatus{}, fmt.Errorf("step %d: COPY needs a source and a target", i+1)
		}
		hash, archive, err := PackCopy(b.ContextDir, s.Args[0], s.Args[1])
		if err != nil {
			return TemplateBuildStatus{}, fmt.Errorf("step %d: %w", i+1, err)
		}
		steps[i].FilesHash, archives[i] = hash, archive
	}
	b.Steps = steps
	req, err := c.RequestTemplateBuild(ctx, b)
	if err != nil {
		return TemplateBuildStatus{}, err
	}
	if opts.OnRequested != nil {
		opts.OnRequested(req)
	}
	uploaded := map[string]bool{}
	for i, s := range steps {
		archive, ok := archives[i]
		if !ok || uploaded[s.FilesHash] {
			continue
		}
		f, err := c.TemplateFile(ctx, req.TemplateID, s.FilesHash)
		if err != nil {
			return TemplateBuildStatus{}, err
		}
		send := !f.Present || s.Force
		if send {
			if f.URL == "" {
				return TemplateBuildStatus{}, fmt.Errorf("step %d: the server gave no upload URL for the files of COPY %s", i+1, s.Args[0])
			}
			if err := c.UploadTemplateFiles(ctx, f.URL, archive); err != nil {
				return TemplateBuildStatus{}, fmt.Errorf("step %d: COPY %s: %w", i+1, s.Args[0], err)
			}
		}
		uploaded[s.FilesHash] = true
		if opts.OnUpload != nil {
			opts.OnUpload(i+1, s.Args[0], send)
		}
	}
	if err := c.StartTemplateBuild(ctx, req.TemplateID, req.BuildID, b); err != nil {
		return TemplateBuildStatus{}, err
	}
	return c.WaitTemplateBuild(ctx, req.TemplateID, req.BuildID, 0, opts)
}

// WaitTemplateBuild follows a started build from log offset offset until it has ended and
// every log entry has been read, handing each entry to opts.OnLog. A failed build returns its
// status and a *TemplateBuildError.
func (c *Client) WaitTemplateBuild(ctx context.Context, templateID, buildID string, offset int, opts BuildTemplateOptions) (TemplateBuildStatus, error) {
	every := opts.PollEvery
	if every <= 0 {
		every = 200 * time.Millisecond
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return TemplateBuildStatus{}, fmt.Errorf("stopped following build %s of template %s (it goes on on the server): %w",
				buildID, templateID, context.Cause(ctx))
		case <-t.C:
		}
		st, err := c.GetTemplateBuildStatus(ctx, templateID, buildID, offset)
		if err != nil {
			if ctx.Err() != nil {
				continue // reported as the stop above
			}
			return TemplateBuildStatus{}, err
		}
		for _, e := range st.LogEntries {
			if opts.OnLog != nil {
				opts.OnLog(e)
			}
		}
		offset += len(st.LogEntries)
		// The server pages the log: an ended build is done once a poll brings nothing new.
		if (st.Status == BuildReady || st.Status == BuildError) && len(st.LogEntries) == 0 {
			if st.Status == BuildError {
				be := &TemplateBuildError{TemplateID: templateID, BuildID: buildID, Message: "unknown error"}
				if st.Reason != nil {
					be.Step, be.Message = st.Reason.Step, st.Reason.Message
				}
				return st, be
			}
			return st, nil
		}
		if len(st.LogEntries) > 0 {
			t.Reset(0) // more may be waiting
		} else {
			t.Reset(every)
		}
	}
}

// IsBuildError reports whether err is a build that failed on the server.
func IsBuildError(err error) bool {
	var be *TemplateBuildError
	return errors.As(err, &be)
}
