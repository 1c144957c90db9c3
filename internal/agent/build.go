package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hearthsh/hearth/internal/agent/sandbox"
	"github.com/hearthsh/hearth/internal/envd"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/template"
)

// EnableTemplateBuilds lets the agent build templates (BuildTemplate) under dataDir, where
// it finds the templates it boots, and delete versions (DeleteTemplate).
// Removes of template versions that the agent's stopping interrupted are finished in the
// background.
func (a *Agent) EnableTemplateBuilds(dataDir string) {
	a.buildDataDir = dataDir
	go template.SweepRemoved(context.Background(), dataDir, func(name string) bool { _, ok := template.VersionBuild(name); return ok })
}

// SetImageCacheLimit caps the OCI layer cache of image builds: after each pull it is cut to
// maxBytes, least recently used layers first (0: never cut).
func (a *Agent) SetImageCacheLimit(maxBytes int64) { a.imageCacheMaxBytes = maxBytes }

// buildTimeout bounds a whole template build on the agent.
const buildTimeout = 2 * time.Hour

// maxBuildLogLines and maxBuildLogLine cap what one build logs.
const (
	maxBuildLogLines = 20_000
	maxBuildLogLine  = 16 << 10
)

// buildSlots bounds the builds an agent runs at once; more wait their turn.
var buildSlots = make(chan struct{}, 2)

// BuildTemplate implements hostagent.v1: it runs template.APIBuild and streams its log.
func (a *Agent) BuildTemplate(ctx context.Context, req *connect.Request[pb.BuildTemplateRequest], stream *connect.ServerStream[pb.BuildTemplateResponse]) error {
	if a.buildDataDir == "" {
		return connect.NewError(connect.CodeUnimplemented, errors.New("this agent does not build templates"))
	}
	m := req.Msg
	if err := template.CheckName(m.GetTemplateId()); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	var image *template.Image
	if m.GetFromImage() != "" {
		if m.GetFromTemplate() != "" {
			return connect.NewError(connect.CodeInvalidArgument, errors.New("give from_image or from_template, not both"))
		}
		image = &template.Image{Ref: m.GetFromImage(), Username: m.GetRegistryUsername(), Password: m.GetRegistryPassword()}
	} else if err := template.CheckName(m.GetFromTemplate()); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("from template: %w", err))
	}
	files := make(map[string][]byte, len(m.GetFiles()))
	for _, f := range m.GetFiles() {
		files[f.GetHash()] = f.GetData()
	}
	steps := make([]template.Step, 0, len(m.GetSteps()))
	for _, s := range m.GetSteps() {
		steps = append(steps, template.Step{Type: s.GetType(), Args: s.GetArgs(), FilesHash: s.GetFilesHash()})
	}
	// Builds are heavy (a rootfs copy, package installs): a few at a time per host.
	select {
	case buildSlots <- struct{}{}:
		defer func() { <-buildSlots }()
	case <-ctx.Done():
		return connect.NewError(connect.CodeCanceled, ctx.Err())
	}
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()

	var mu sync.Mutex
	var sendErr error
	lines := 0
	logf := func(step, level, msg string) {
		mu.Lock()
		defer mu.Unlock()
		if sendErr != nil {
			return
		}
		// A step's output is the caller's: past the cap only errors and finalize lines get through.
		if lines++; lines > maxBuildLogLines && level != "error" && step != template.PhaseFinalize {
			if lines == maxBuildLogLines+1 {
				msg, level = fmt.Sprintf("(build log truncated after %d lines)", maxBuildLogLines), "warn"
			} else {
				return
			}
		}
		if len(msg) > maxBuildLogLine {
			msg = msg[:maxBuildLogLine] + "…"
		}
		sendErr = stream.Send(&pb.BuildTemplateResponse{Log: &pb.BuildLogEntry{
			Timestamp: timestamppb.Now(), Level: level, Message: msg, Step: step,
		}})
		if sendErr != nil {
			cancel() // the control plane went away: stop building
		}
	}
	start := time.Now()
	o := template.APIBuildOptions{
		DataDir: a.buildDataDir, Name: m.GetTemplateId(), From: m.GetFromTemplate(), Steps: steps,
		Image: image, ImageCacheDir: template.LayerCacheDir(a.buildDataDir), ImageCacheMaxBytes: a.imageCacheMaxBytes,
		StartCmd: m.GetStartCmd(), ReadyCmd: m.GetReadyCmd(), Log: logf,
		Archive: func(hash string) (io.ReadCloser, error) {
			b, ok := files[hash]
			if !ok {
				return nil, fmt.Errorf("no uploaded archive with hash %s", hash)
			}
			return io.NopCloser(bytes.NewReader(b)), nil
		},
	}
	if m.GetStartCmd() != "" {
		if !a.mgr.StartSnapshots() {
			return a.sendResult(stream, &mu, &pb.BuildResult{
				Error:     fmt.Sprintf("this agent's runtime (%s) cannot take start snapshots: start and ready commands need the gvisor runtime", a.runtime),
				ErrorStep: template.PhaseFinalize,
			})
		}
		o.Finalize = func(ctx context.Context, t *template.Template) error {
			return a.bootForStartSnapshot(ctx, t, m, logf)
		}
	}
	t, err := template.APIBuild(ctx, o)
	res := &pb.BuildResult{}
	if err != nil {
		res.Error, res.ErrorStep = err.Error(), template.PhaseBase
		var se *template.StepError
		if errors.As(err, &se) {
			res.ErrorStep = se.Step
		}
		logf(res.ErrorStep, "error", "Build failed: "+err.Error())
		a.log.Info("template build failed", "template", m.GetTemplateId(), "step", res.ErrorStep, "err", err)
	} else {
		res.Version, res.EnvdVersion, res.DiskMib = t.Version(), envd.Version, uint32(max(t.Meta.DiskMiB, 0))
		logf(template.PhaseFinalize, "info", fmt.Sprintf("Build finished, took %v", time.Since(start).Round(time.Millisecond)))
		a.log.Info("template built", "template", m.GetTemplateId(), "version", res.Version, "took", time.Since(start).Round(time.Millisecond))
	}
	return a.sendResult(stream, &mu, res)
}

func (a *Agent) sendResult(stream *connect.ServerStream[pb.BuildTemplateResponse], mu *sync.Mutex, res *pb.BuildResult) error {
	mu.Lock()
	defer mu.Unlock()
	return stream.Send(&pb.BuildTemplateResponse{Result: res})
}

// bootForStartSnapshot creates a throwaway sandbox of the new template: the driver runs the
// start command, waits for the ready command and checkpoints it into the template snapshot
// that later sandboxes restore from. The sandbox is destroyed again.
func (a *Agent) bootForStartSnapshot(ctx context.Context, t *template.Template, m *pb.BuildTemplateRequest, logf template.LogFunc) error {
	cpus, mem := int(m.GetCpus()), int(m.GetMemoryMib())
	if cpus < 1 {
		cpus = 2
	}
	if mem < 128 {
		mem = 1024
	}
	logf(template.PhaseFinalize, "info", "Running start command: "+t.Meta.StartCmd)
	ready := t.Meta.ReadyCmd
	if ready == "" {
		ready = "sleep 20"
	}
	logf(template.PhaseFinalize, "info", "Waiting for template to be ready: "+ready)
	id := "build-" + t.Meta.BuildID
	_, err := a.mgr.Create(ctx, sandbox.CreateRequest{ID: id, Template: t.Name, CPUs: cpus, MemoryMiB: mem, DiskMiB: int(m.GetDiskMib())})
	if derr := a.mgr.Destroy(context.WithoutCancel(ctx), id); derr != nil && !errors.Is(derr, sandbox.ErrNotFound) {
		a.log.Warn("destroy the start snapshot's sandbox", "id", id, "err", derr)
	}
	if err != nil {
		return err
	}
	logf(template.PhaseFinalize, "info", "Template is ready")
	return nil
}
