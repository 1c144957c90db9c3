// Package deploy holds Hearth's deployments on existing schedulers: Kubernetes manifests
// (kustomize, under kubernetes/) and Nomad job specs (JSON, under nomad/). There is no cluster
// on the test machines, so these tests check what can go wrong without one: every rendered
// object decodes strictly into its API type (a misspelt field fails instead of being dropped
// by the API server), every hearth flag and HEARTH_ variable in them exists in the binary, and
// the invariants the design relies on hold (replicas, privileges, ports, secrets).
package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	nomad "github.com/hashicorp/nomad/api"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// ---- hearth's command line, from the binary itself ----

// hearthCLI is what the deployments may use of the hearth binary.
type hearthCLI struct {
	// flags by command path ("server", "agent", "template build").
	flags map[string][]string
	// env holds the HEARTH_ variables the binary reads.
	env []string
}

// commandPaths are the hearth commands the deployments run.
var commandPaths = [][]string{{"server"}, {"agent"}, {"template", "build"}}

var helpFlag = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)`)

// buildDir holds a hearth built for the test run, removed by TestMain.
var buildDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

var (
	cliOnce   sync.Once
	cliLoaded hearthCLI
	cliErr    error
)

// loadHearthCLI reads the flags from `hearth CMD --help` of bin/hearth when it is newer than
// cmd/hearth's sources (make test builds it first), else of a fresh build; once per run.
func loadHearthCLI(t *testing.T) hearthCLI {
	t.Helper()
	cliOnce.Do(func() { cliLoaded, cliErr = readHearthCLI() })
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliLoaded
}

func readHearthCLI() (hearthCLI, error) {
	bin, err := hearthBinary()
	if err != nil {
		return hearthCLI{}, err
	}
	cli := hearthCLI{flags: map[string][]string{}}
	for _, path := range commandPaths {
		out, err := exec.Command(bin, append(slices.Clone(path), "--help")...).CombinedOutput()
		if err != nil {
			return hearthCLI{}, fmt.Errorf("%s %s --help: %v\n%s", bin, strings.Join(path, " "), err, out)
		}
		var names []string
		for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
			names = append(names, m[1])
		}
		if !slices.Contains(names, "data-dir") {
			return hearthCLI{}, fmt.Errorf("%s --help lists no --data-dir; parsed %v from:\n%s", strings.Join(path, " "), names, out)
		}
		cli.flags[strings.Join(path, " ")] = names
	}
	// The variables are read with os.Getenv or templateEnvOr; take every HEARTH_ name quoted in
	// cmd/hearth's non-test sources.
	srcs, err := filepath.Glob("../cmd/hearth/*.go")
	if err != nil || len(srcs) == 0 {
		return hearthCLI{}, fmt.Errorf("cmd/hearth sources: %v (%d files)", err, len(srcs))
	}
	envName := regexp.MustCompile(`"(HEARTH_[A-Z0-9_]+)"`)
	for _, src := range srcs {
		if strings.HasSuffix(src, "_test.go") {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return hearthCLI{}, err
		}
		for _, m := range envName.FindAllSubmatch(b, -1) {
			if !slices.Contains(cli.env, string(m[1])) {
				cli.env = append(cli.env, string(m[1]))
			}
		}
	}
	return cli, nil
}

func hearthBinary() (string, error) {
	bin, err := filepath.Abs("../bin/hearth")
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(bin); err == nil && !sourcesNewerThan(st.ModTime().UnixNano()) {
		return bin, nil
	}
	dir, err := os.MkdirTemp("", "hearth-deploy-test-")
	if err != nil {
		return "", err
	}
	buildDir = dir
	bin = filepath.Join(dir, "hearth")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/hearth")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/hearth: %v\n%s", err, out)
	}
	return bin, nil
}

func sourcesNewerThan(unixNano int64) bool {
	srcs, _ := filepath.Glob("../cmd/hearth/*.go")
	for _, src := range srcs {
		if st, err := os.Stat(src); err == nil && st.ModTime().UnixNano() > unixNano {
			return true
		}
	}
	return false
}

// checkArgs reports what in a hearth command line the binary does not know. args is the
// whole line after the binary's name.
func (cli hearthCLI) checkArgs(args []string) error {
	var path string
	for _, p := range commandPaths {
		if len(args) >= len(p) && slices.Equal(args[:len(p)], p) {
			path = strings.Join(p, " ")
		}
	}
	if path == "" {
		return fmt.Errorf("args %q: not one of the hearth commands %v", args, commandPaths)
	}
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !slices.Contains(cli.flags[path], name) {
			return fmt.Errorf("hearth %s has no flag --%s (it has %v)", path, name, cli.flags[path])
		}
	}
	return nil
}

func (cli hearthCLI) checkEnv(name string) error {
	if strings.HasPrefix(name, "HEARTH_") && !slices.Contains(cli.env, name) {
		return fmt.Errorf("hearth reads no $%s (it reads %v)", name, cli.env)
	}
	return nil
}

// flagValue returns the value of --name=value in args.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// ---- Kubernetes ----

// rendered is a kustomization's output, every object decoded strictly into its type.
type rendered struct {
	namespaces   map[string]*corev1.Namespace
	deployments  map[string]*appsv1.Deployment
	daemonSets   map[string]*appsv1.DaemonSet
	statefulSets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	secrets      map[string]*corev1.Secret
	pdbs         map[string]*policyv1.PodDisruptionBudget
}

// render builds the kustomization at dir (relative to deploy/) in memory, with deploy/ copied
// in and the extra files (the Secrets' sources users create) added.
func render(dir string, extra map[string]string) (*rendered, error) {
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".json")) {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile(filepath.Join("/deploy", p), b)
	})
	if err != nil {
		return nil, err
	}
	for p, content := range extra {
		if err := mem.WriteFile(filepath.Join("/deploy", dir, p), []byte(content)); err != nil {
			return nil, err
		}
	}
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, filepath.Join("/deploy", dir))
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	out := &rendered{
		namespaces: map[string]*corev1.Namespace{}, deployments: map[string]*appsv1.Deployment{},
		daemonSets: map[string]*appsv1.DaemonSet{}, statefulSets: map[string]*appsv1.StatefulSet{},
		services: map[string]*corev1.Service{}, secrets: map[string]*corev1.Secret{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{},
	}
	for _, r := range resources.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		kind, name := r.GetKind(), r.GetName()
		var obj any
		switch kind {
		case "Namespace":
			obj = put(out.namespaces, name)
		case "Deployment":
			obj = put(out.deployments, name)
		case "DaemonSet":
			obj = put(out.daemonSets, name)
		case "StatefulSet":
			obj = put(out.statefulSets, name)
		case "Service":
			obj = put(out.services, name)
		case "Secret":
			obj = put(out.secrets, name)
		case "PodDisruptionBudget":
			obj = put(out.pdbs, name)
		default:
			return nil, fmt.Errorf("%s %s: a kind this test does not decode; add it", kind, name)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s %s: %w", kind, name, err)
		}
	}
	return out, nil
}

func put[T any](m map[string]*T, name string) *T {
	v := new(T)
	m[name] = v
	return v
}

// exampleSecrets are stand-ins for the files overlays/example generates its Secrets from.
var exampleSecrets = map[string]string{
	"secrets/agent-token":       "0123456789abcdef",
	"secrets/api-key":           "e2b_0123456789abcdef",
	"secrets/postgres-password": "fedcba9876543210",
	"secrets/tls.crt":           "-----BEGIN CERTIFICATE-----\n",
	"secrets/tls.key":           "-----BEGIN PRIVATE KEY-----\n",
}

func TestKubernetes(t *testing.T) {
	cli := loadHearthCLI(t)
	tests := []struct {
		name  string
		dir   string
		extra map[string]string
		// tls: the server serves HTTPS with the operator's certificate.
		tls bool
	}{
		{name: "example overlay (in-cluster PostgreSQL, TLS)", dir: "kubernetes/overlays/example", extra: exampleSecrets, tls: true},
		{name: "external PostgreSQL, no TLS", dir: "testdata/external-db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := render(tt.dir, tt.extra)
			if err != nil {
				t.Fatal(err)
			}
			server := r.deployments["hearth-server"]
			agent := r.daemonSets["hearth-agent"]
			if server == nil || agent == nil {
				t.Fatalf("want Deployment hearth-server and DaemonSet hearth-agent; got %v, %v", keys(r.deployments), keys(r.daemonSets))
			}
			for _, p := range []struct {
				what string
				spec *corev1.PodSpec
			}{{"Deployment hearth-server", &server.Spec.Template.Spec}, {"DaemonSet hearth-agent", &agent.Spec.Template.Spec}} {
				if err := checkPod(cli, r, p.spec); err != nil {
					t.Errorf("%s: %v", p.what, err)
				}
			}
			checkServer(t, r, server, tt.tls)
			checkAgent(t, r, agent)
		})
	}
}

func keys[T any](m map[string]T) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// checkPod checks what holds for every hearth pod: known flags and variables, $(VAR) that
// Kubernetes can expand, and Secrets (with their keys) that the rendering contains.
func checkPod(cli hearthCLI, r *rendered, spec *corev1.PodSpec) error {
	mounts := map[string]string{} // secret volume name -> secret name
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			if r.secrets[v.Secret.SecretName] == nil {
				return fmt.Errorf("volume %s: no Secret %s in the rendering (have %v)", v.Name, v.Secret.SecretName, keys(r.secrets))
			}
			mounts[v.Name] = v.Secret.SecretName
		}
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if len(c.Command) > 0 {
			return fmt.Errorf("container %s: sets command %q; the image's entrypoint is hearth", c.Name, c.Command)
		}
		if err := cli.checkArgs(c.Args); err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
		var defined []string
		for _, e := range c.Env {
			if err := cli.checkEnv(e.Name); err != nil {
				return fmt.Errorf("container %s: %w", c.Name, err)
			}
			if e.Value != "" && e.ValueFrom != nil {
				return fmt.Errorf("container %s: env %s has both value and valueFrom", c.Name, e.Name)
			}
			if err := expandable(e.Value, defined); err != nil {
				return fmt.Errorf("container %s: env %s: %w", c.Name, e.Name, err)
			}
			if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
				s := r.secrets[ref.SecretKeyRef.Name]
				if s == nil {
					return fmt.Errorf("container %s: env %s: no Secret %s in the rendering (have %v)", c.Name, e.Name, ref.SecretKeyRef.Name, keys(r.secrets))
				}
				if _, ok := s.Data[ref.SecretKeyRef.Key]; !ok {
					return fmt.Errorf("container %s: env %s: Secret %s has no key %s", c.Name, e.Name, s.Name, ref.SecretKeyRef.Key)
				}
			}
			defined = append(defined, e.Name)
		}
		for _, a := range c.Args {
			if err := expandable(a, defined); err != nil {
				return fmt.Errorf("container %s: arg %s: %w", c.Name, a, err)
			}
		}
		// Files the flags name must come from a mounted Secret.
		for _, flag := range []string{"tls-cert", "tls-key"} {
			p, ok := flagValue(c.Args, flag)
			if !ok {
				continue
			}
			found := false
			for _, m := range c.VolumeMounts {
				if name, ok := mounts[m.Name]; ok && strings.HasPrefix(p, m.MountPath+"/") {
					if _, ok := r.secrets[name].Data[strings.TrimPrefix(p, m.MountPath+"/")]; ok {
						found = true
					}
				}
			}
			if !found {
				return fmt.Errorf("container %s: --%s=%s is no key of a mounted Secret", c.Name, flag, p)
			}
		}
	}
	return nil
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandable reports a $(NAME) Kubernetes would leave as is: NAME not defined earlier.
func expandable(s string, defined []string) error {
	for _, m := range varRef.FindAllStringSubmatch(s, -1) {
		if !slices.Contains(defined, m[1]) {
			return fmt.Errorf("$(%s) is not an env variable defined before it, so Kubernetes passes it literally", m[1])
		}
	}
	return nil
}

func checkServer(t *testing.T, r *rendered, d *appsv1.Deployment, tls bool) {
	t.Helper()
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("hearth-server replicas %s: want at least 2", deref(d.Spec.Replicas))
	}
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("hearth-server: want one container, got %d", len(d.Spec.Template.Spec.Containers))
	}
	c := d.Spec.Template.Spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for flag, port := range map[string]string{"listen": "api", "proxy-listen": "proxy"} {
		v, ok := flagValue(c.Args, flag)
		if !ok || v != fmt.Sprintf(":%d", ports[port]) {
			t.Errorf("hearth-server --%s=%q: want :%d, the container port %s", flag, v, ports[port], port)
		}
	}
	if ports["api"] != 3000 || ports["proxy"] != 3002 {
		t.Errorf("hearth-server container ports %v: want api 3000 and proxy 3002", ports)
	}
	if _, ok := flagValue(c.Args, "tls-cert"); ok != tls {
		t.Errorf("hearth-server args %q: --tls-cert present %v, want %v", c.Args, ok, tls)
	}
	hasDB := false
	for _, e := range c.Env {
		hasDB = hasDB || e.Name == "HEARTH_DATABASE_URL"
	}
	if !hasDB {
		t.Error("hearth-server has no HEARTH_DATABASE_URL: replicas on SQLite would not share state")
	}
	for what, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != "/health" || probe.HTTPGet.Port != intstr.FromString("api") {
			t.Errorf("hearth-server %s probe %+v: want GET /health on port api", what, probe)
		}
	}
	svc := r.services["hearth-server"]
	if svc == nil {
		t.Fatalf("no Service hearth-server (have %v)", keys(r.services))
	}
	for k, v := range svc.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("Service hearth-server selects %s=%s, which the server's pods lack (%v)", k, v, d.Spec.Template.Labels)
		}
	}
	got := map[string]int32{}
	for _, p := range svc.Spec.Ports {
		if _, ok := ports[p.TargetPort.String()]; !ok {
			t.Errorf("Service port %s targets %s, no container port of hearth-server", p.Name, p.TargetPort.String())
		}
		got[p.Name] = p.Port
	}
	if got["api"] != 3000 || got["proxy"] != 3002 {
		t.Errorf("Service hearth-server ports %v: want api 3000 and proxy 3002", got)
	}
	if pdb := r.pdbs["hearth-server"]; pdb == nil || pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 {
		t.Errorf("want a PodDisruptionBudget hearth-server keeping at least one replica, got %+v", pdb)
	}
}

func checkAgent(t *testing.T, r *rendered, ds *appsv1.DaemonSet) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if spec.NodeSelector["hearth.sh/agent"] != "true" {
		t.Errorf("agent nodeSelector %v: want hearth.sh/agent=true", spec.NodeSelector)
	}
	if !spec.HostNetwork || !spec.HostPID || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("agent hostNetwork %v hostPID %v dnsPolicy %q: want true, true, ClusterFirstWithHostNet", spec.HostNetwork, spec.HostPID, spec.DNSPolicy)
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
			t.Errorf("agent container %s is not privileged", c.Name)
		}
	}
	var agent *corev1.Container
	for i := range spec.Containers {
		if len(spec.Containers[i].Args) > 0 && spec.Containers[i].Args[0] == "agent" {
			agent = &spec.Containers[i]
		}
	}
	if agent == nil {
		t.Fatal("no container runs hearth agent")
	}
	fields := map[string]string{}
	for _, e := range agent.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			fields[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	for flag, want := range map[string]string{
		"host-id": "spec.nodeName", "listen": "status.hostIP", "proxy-listen": "status.hostIP",
		"advertise-rpc": "status.hostIP", "advertise-proxy": "status.hostIP",
	} {
		v, _ := flagValue(agent.Args, flag)
		m := varRef.FindStringSubmatch(v)
		if m == nil || fields[m[1]] != want {
			t.Errorf("agent --%s=%q: want it from the downward API's %s", flag, v, want)
		}
	}
	// The control plane URL must name the server's Service and its API port.
	cp, _ := flagValue(agent.Args, "control-plane")
	u, err := url.Parse(cp)
	if err != nil || u.Scheme != "http" {
		t.Fatalf("agent --control-plane=%q: want an http URL", cp)
	}
	svcName, _, _ := strings.Cut(u.Hostname(), ".")
	svc := r.services[svcName]
	if svc == nil || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return fmt.Sprint(p.Port) == u.Port() && p.Name == "api" }) {
		t.Errorf("agent --control-plane=%q: no Service %q with api port %s", cp, svcName, u.Port())
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range agent.VolumeMounts {
		mounts[m.MountPath] = m
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	data, _ := flagValue(agent.Args, "data-dir")
	for path, bidirectional := range map[string]bool{"/run/netns": true, data: true, "/sys/fs/cgroup": false} {
		m, ok := mounts[path]
		if !ok || hostPaths[m.Name] != path {
			t.Errorf("agent: %s is not the host's %s (mounts %v)", path, path, agent.VolumeMounts)
			continue
		}
		if bidirectional && (m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional) {
			t.Errorf("agent: mount %s needs Bidirectional propagation: the agent mounts in it", path)
		}
	}
}

// TestStrictDecodeCatchesTypos proves the checks above can fail: a misspelt field renders
// fine (kustomize keeps what it does not know) but does not decode.
func TestStrictDecodeCatchesTypos(t *testing.T) {
	_, err := render("testdata/typo", nil)
	if err == nil || !strings.Contains(err.Error(), `unknown field "replica"`) {
		t.Fatalf("render testdata/typo: got %v, want an unknown field replica error", err)
	}
	_, err = decodeNomad("testdata/typo-nomad.json")
	if err == nil || !strings.Contains(err.Error(), `unknown field "Cout"`) {
		t.Fatalf("decode testdata/typo-nomad.json: got %v, want an unknown field Cout error", err)
	}
}

func TestFlagCheckCatchesUnknownFlags(t *testing.T) {
	cli := loadHearthCLI(t)
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"agent", "--data-dir=/d", "--advertise-rpc=1.2.3.4:5008"}, ""},
		{[]string{"template", "build", "base", "--data-dir=/d"}, ""},
		{[]string{"agent", "--advertize-rpc=1.2.3.4:5008"}, "hearth agent has no flag --advertize-rpc"},
		{[]string{"server", "--host-id=x"}, "hearth server has no flag --host-id"},
		{[]string{"serve"}, "not one of the hearth commands"},
	}
	for _, tt := range tests {
		err := cli.checkArgs(tt.args)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("checkArgs(%q) = %v, want %q", tt.args, err, tt.wantErr)
		}
	}
	if err := cli.checkEnv("HEARTH_AGENT_TOKN"); err == nil {
		t.Error("checkEnv accepts HEARTH_AGENT_TOKN")
	}
}

// ---- Nomad ----

// decodeNomad decodes a job file as `nomad job run -json` and POST /v1/jobs take it,
// refusing unknown fields.
func decodeNomad(path string) (*nomad.Job, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var req struct{ Job *nomad.Job }
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if req.Job == nil || req.Job.ID == nil {
		return nil, fmt.Errorf("%s: no Job with an ID", path)
	}
	return req.Job, nil
}

var nomadVarRef = regexp.MustCompile(`\$\{NOMAD_META_([A-Za-z0-9_]+)\}`)

// nomadTask checks a task's driver config and hearth command line, and returns its args.
func nomadTask(cli hearthCLI, job *nomad.Job, task *nomad.Task) ([]string, error) {
	for k := range task.Config {
		if k != "command" && k != "args" {
			return nil, fmt.Errorf("task %s: config key %q; these jobs use only command and args", task.Name, k)
		}
	}
	if task.Config["command"] != "/usr/local/bin/hearth" {
		return nil, fmt.Errorf("task %s: command %v, want /usr/local/bin/hearth", task.Name, task.Config["command"])
	}
	raw, _ := task.Config["args"].([]any)
	var args []string
	for _, a := range raw {
		s, ok := a.(string)
		if !ok {
			return nil, fmt.Errorf("task %s: arg %v is not a string", task.Name, a)
		}
		for _, m := range nomadVarRef.FindAllStringSubmatch(s, -1) {
			if _, ok := job.Meta[m[1]]; !ok {
				return nil, fmt.Errorf("task %s: arg %s: the job has no meta %s", task.Name, s, m[1])
			}
		}
		args = append(args, s)
	}
	if err := cli.checkArgs(args); err != nil {
		return nil, fmt.Errorf("task %s: %w", task.Name, err)
	}
	envLine := regexp.MustCompile(`(?m)^(?:\{\{[^}]*\}\})?([A-Z][A-Z0-9_]*)=`)
	for _, tmpl := range task.Templates {
		if tmpl.Envvars == nil || !*tmpl.Envvars || tmpl.EmbeddedTmpl == nil {
			continue
		}
		for _, m := range envLine.FindAllStringSubmatch(*tmpl.EmbeddedTmpl, -1) {
			if err := cli.checkEnv(m[1]); err != nil {
				return nil, fmt.Errorf("task %s: template: %w", task.Name, err)
			}
		}
	}
	return args, nil
}

func TestNomad(t *testing.T) {
	cli := loadHearthCLI(t)

	t.Run("agent", func(t *testing.T) {
		job, err := decodeNomad("nomad/hearth-agent.json")
		if err != nil {
			t.Fatal(err)
		}
		if job.Type == nil || *job.Type != "system" {
			t.Errorf("agent job type %s: want system (one agent per eligible client)", deref(job.Type))
		}
		if !slices.ContainsFunc(job.Constraints, func(c *nomad.Constraint) bool {
			return c.LTarget == "${meta.hearth_agent}" && c.Operand == "=" && c.RTarget == "true"
		}) {
			t.Errorf("agent job: no constraint meta.hearth_agent = true, so it would run on every client")
		}
		sawAgent := false
		for _, g := range job.TaskGroups {
			for _, task := range g.Tasks {
				// raw_exec runs the task as the client's user, root, in the host's namespaces:
				// what the agent needs for netns, nftables, cgroups and mounts.
				if task.Driver != "raw_exec" {
					t.Errorf("task %s: driver %s, want raw_exec", task.Name, task.Driver)
				}
				args, err := nomadTask(cli, job, task)
				if err != nil {
					t.Error(err)
					continue
				}
				if args[0] != "agent" {
					continue
				}
				sawAgent = true
				for flag, want := range map[string]string{
					"host-id": "${node.unique.name}", "listen": "${attr.unique.network.ip-address}:5008",
					"advertise-rpc": "${attr.unique.network.ip-address}:5008",
					"proxy-listen":  "${attr.unique.network.ip-address}:5007", "advertise-proxy": "${attr.unique.network.ip-address}:5007",
				} {
					if v, _ := flagValue(args, flag); v != want {
						t.Errorf("agent --%s=%q, want %q", flag, v, want)
					}
				}
				for _, port := range []int{5008, 5007} {
					if !reserved(g, port) {
						t.Errorf("agent group does not reserve port %d", port)
					}
				}
			}
		}
		if !sawAgent {
			t.Error("no task runs hearth agent")
		}
	})

	t.Run("server", func(t *testing.T) {
		job, err := decodeNomad("nomad/hearth-server.json")
		if err != nil {
			t.Fatal(err)
		}
		if job.Type == nil || *job.Type != "service" {
			t.Errorf("server job type %s: want service", deref(job.Type))
		}
		if len(job.TaskGroups) != 1 {
			t.Fatalf("server job: want one group, got %d", len(job.TaskGroups))
		}
		g := job.TaskGroups[0]
		if g.Count == nil || *g.Count < 2 {
			t.Errorf("server count %s: want at least 2", deref(g.Count))
		}
		labels := map[string]bool{}
		for _, n := range g.Networks {
			for _, p := range slices.Concat(n.ReservedPorts, n.DynamicPorts) {
				labels[p.Label] = true
			}
		}
		checked := false
		for _, s := range g.Services {
			if !labels[s.PortLabel] {
				t.Errorf("service %s: port %q is not a port of the group (%v)", s.Name, s.PortLabel, labels)
			}
			for _, c := range s.Checks {
				checked = checked || (s.PortLabel == "api" && c.Type == "http" && c.Path == "/health" && c.Interval > 0 && c.Timeout > 0)
			}
		}
		if !checked {
			t.Error("no http check of /health on the api port")
		}
		for _, task := range g.Tasks {
			args, err := nomadTask(cli, job, task)
			if err != nil {
				t.Fatal(err)
			}
			for flag, port := range map[string]string{"listen": "api", "proxy-listen": "proxy"} {
				if v, _ := flagValue(args, flag); v != ":${NOMAD_PORT_"+port+"}" || !labels[port] {
					t.Errorf("server --%s=%q: want :${NOMAD_PORT_%s} of a group port", flag, v, port)
				}
			}
			env := ""
			for _, tmpl := range task.Templates {
				if tmpl.EmbeddedTmpl != nil {
					env += *tmpl.EmbeddedTmpl
				}
			}
			for _, name := range []string{"HEARTH_AGENT_TOKEN", "HEARTH_DATABASE_URL"} {
				if !strings.Contains(env, name+"=") {
					t.Errorf("server task: no template sets %s", name)
				}
			}
		}
	})
}

func reserved(g *nomad.TaskGroup, port int) bool {
	for _, n := range g.Networks {
		for _, p := range n.ReservedPorts {
			if p.Value == port {
				return true
			}
		}
	}
	return false
}

// deref shows a pointer field's value in messages ("unset" for nil).
func deref[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}
