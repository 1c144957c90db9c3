package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
)

func testTemplateBuilds(t *testing.T, open Opener) {
	s := open(t)
	ctx := ctxFor(t)
	b := store.TemplateBuild{
		ID: "6b3f0d6e-0000-4000-8000-000000000001", TemplateID: "tpl0000000000000000a", Status: store.BuildWaiting,
		CPUs: 2, MemoryMiB: 1024, CreatedAt: base, UpdatedAt: base, Tags: []string{"v1", "prod"},
		AgentTemplate: "tpl0000000000000000a-6b3f0d6e-0000-4000-8000-000000000001",
	}
	if err := s.CreateTemplateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTemplateBuild(ctx, b); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate build: got %v, want ErrConflict", err)
	}
	got, err := s.TemplateBuild(ctx, b.ID)
	if err != nil || !reflect.DeepEqual(got, b) {
		t.Fatalf("read back: %+v, %v; want %+v", got, err, b)
	}
	if _, err := s.TemplateBuild(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown build: got %v, want ErrNotFound", err)
	}
	fin := base.Add(time.Minute)
	upd, err := s.UpdateTemplateBuild(ctx, b.ID, func(x *store.TemplateBuild) error {
		x.Status, x.HostID, x.Recipe, x.Reason, x.ReasonStep, x.FinishedAt = store.BuildError, "h1", `{"steps":[]}`, "boom", "2", fin
		x.Artifact, x.DeletedAt, x.Tags = "sha256:ab", fin, nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.TemplateBuild(ctx, b.ID)
	if err != nil || !reflect.DeepEqual(got, upd) || got.Artifact != "sha256:ab" || !got.DeletedAt.Equal(fin) || got.Tags != nil || got.Status != store.BuildError || got.ReasonStep != "2" || !got.FinishedAt.Equal(fin) || !got.CreatedAt.Equal(base) {
		t.Fatalf("after update: %+v, %v", got, err)
	}
	stop := errors.New("stop")
	if _, err := s.UpdateTemplateBuild(ctx, b.ID, func(x *store.TemplateBuild) error { x.Status = "x"; return stop }); !errors.Is(err, stop) {
		t.Fatalf("fn error: got %v", err)
	}
	if got, _ := s.TemplateBuild(ctx, b.ID); got.Status != store.BuildError {
		t.Fatalf("an update whose fn failed wrote %q", got.Status)
	}
	if _, err := s.UpdateTemplateBuild(ctx, "nope", func(*store.TemplateBuild) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update unknown: got %v", err)
	}

	newer := b
	newer.ID, newer.CreatedAt, newer.UpdatedAt = "6b3f0d6e-0000-4000-8000-000000000002", base.Add(time.Hour), base.Add(time.Hour)
	if err := s.CreateTemplateBuild(ctx, newer); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListTemplateBuilds(ctx, b.TemplateID)
	if err != nil || len(list) != 2 || list[0].ID != newer.ID || list[1].ID != b.ID {
		t.Fatalf("list: %+v, %v; want newest first", list, err)
	}
	if list, err := s.ListTemplateBuilds(ctx, "other"); err != nil || len(list) != 0 {
		t.Fatalf("list other: %+v, %v", list, err)
	}

	var entries []store.BuildLogEntry
	for i := range 250 {
		entries = append(entries, store.BuildLogEntry{Seq: i, Time: base.Add(time.Duration(i) * time.Millisecond), Level: "info", Step: fmt.Sprint(i % 3), Message: fmt.Sprintf("line %d", i)})
	}
	if err := s.AppendBuildLogs(ctx, b.ID, entries[:200]); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendBuildLogs(ctx, b.ID, entries[200:]); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendBuildLogs(ctx, b.ID, entries[5:6]); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate seq: got %v, want ErrConflict", err)
	}
	page, err := s.BuildLogs(ctx, b.ID, 100, 100)
	if err != nil || len(page) != 100 || page[0] != entries[100] || page[99] != entries[199] {
		t.Fatalf("page at 100: %d entries, %v", len(page), err)
	}
	if page, err := s.BuildLogs(ctx, b.ID, 240, 100); err != nil || len(page) != 10 {
		t.Fatalf("last page: %d entries, %v", len(page), err)
	}
	if page, err := s.BuildLogs(ctx, b.ID, 250, 100); err != nil || len(page) != 0 {
		t.Fatalf("past the end: %d entries, %v", len(page), err)
	}
	if page, err := s.BuildLogs(ctx, newer.ID, 0, 100); err != nil || len(page) != 0 {
		t.Fatalf("another build's log: %d entries, %v", len(page), err)
	}
}
