/*
 * blade-go's test of the chaosblade-operator patch (build/chaosblade/patches/operator): a
 * ChaosBlade experiment of target `go`, scope container or pod, goes through the operator's
 * real dispatcher and controllers (exec.NewDispatcherExecutor: pod matching, container
 * matching, the os sub-resource models, CommonExecutor) to the pods/exec request it sends to
 * the chaosblade-tool pod of the target's node. The Kubernetes objects live in
 * controller-runtime's fake client; pods/exec is served by this test over SPDY (the operator's
 * own client-go executor, unchanged), which records the command and answers as blade would.
 *
 * Copied into the operator's exec/ package by build-patched.sh and built with `go test -c`.
 * Environment (all optional; tests/test_chaosblade_k8s.py sets them):
 *   BLADE_GO_CRI_SPEC          the cri spec file to serve as /opt/chaosblade/yaml/... (the
 *                              release's after `blade-go chaosblade install`); else a minimal one
 *   BLADE_GO_CONTAINER_ID      the target container's id (64 hex) in the fake pod's status
 *   BLADE_GO_CRI_ENDPOINT      the containerd socket the experiments name (--cri-endpoint, as
 *                              on a node whose socket is not /run/containerd/containerd.sock);
 *                              default /run/k3s/containerd/containerd.sock (k3s's)
 *   BLADE_GO_OPERATOR_COMMANDS write every case's create and destroy argv there as JSON
 */

package exec

import (
	"context"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/chaosblade-io/chaosblade-operator/channel"
	"github.com/chaosblade-io/chaosblade-operator/exec/container"
	"github.com/chaosblade-io/chaosblade-operator/exec/model"
	"github.com/chaosblade-io/chaosblade-operator/pkg/apis/chaosblade/v1alpha1"
	"github.com/chaosblade-io/chaosblade-operator/pkg/runtime/chaosblade"
	"github.com/chaosblade-io/chaosblade-operator/version"
)

const minimalCriSpec = `version: v1
kind: plugin
items:
- target: go
  shortDesc: Go function faults
  actions:
  - action: return
  - action: delay
  - action: panic
  - action: args
`

// execCall is one pods/exec request the operator made.
type execCall struct {
	Namespace, Pod, Container string
	Command                   []string
}

// execServer answers pods/exec over SPDY (protocol v4) with one JSON Response on stdout.
type execServer struct {
	mu     sync.Mutex
	calls  []execCall
	answer func(argv []string) string
}

func (s *execServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// /api/v1/namespaces/NS/pods/NAME/exec?command=..&container=..
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) != 7 || parts[4] != "pods" || parts[6] != "exec" {
		http.Error(w, "not pods/exec: "+r.URL.Path, http.StatusNotFound)
		return
	}
	call := execCall{Namespace: parts[3], Pod: parts[5], Container: r.URL.Query().Get("container"),
		Command: r.URL.Query()["command"]}
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	if _, err := httpstream.Handshake(r, w, []string{"v4.channel.k8s.io"}); err != nil {
		return
	}
	type opened struct {
		stream httpstream.Stream
		ready  <-chan struct{}
	}
	streams := make(chan opened, 4)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r,
		func(st httpstream.Stream, replySent <-chan struct{}) error {
			streams <- opened{st, replySent}
			return nil
		})
	if conn == nil {
		return
	}
	defer conn.Close()
	byType := map[string]httpstream.Stream{}
	for len(byType) < 3 { // error, stdout, stderr (no stdin, no tty)
		select {
		case o := <-streams:
			<-o.ready
			byType[o.stream.Headers().Get(corev1.StreamType)] = o.stream
		case <-time.After(20 * time.Second):
			return
		}
	}
	byType[corev1.StreamTypeStdout].Write([]byte(s.answer(call.Command) + "\n"))
	for _, t := range []string{corev1.StreamTypeStdout, corev1.StreamTypeStderr, corev1.StreamTypeError} {
		byType[t].Close()
	}
	time.Sleep(50 * time.Millisecond) // let the client read the half-closed streams
}

func (s *execServer) take() []execCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	calls := s.calls
	s.calls = nil
	return calls
}

type opCase struct {
	Name     string
	Scope    string
	Action   string
	Matchers map[string]string // besides the resource ones
	Flags    []string          // what must reach blade besides --cri-endpoint and the container ones (sorted)
}

var (
	containerID = "4f1c0000000000000000000000000000000000000000000000000000000beef1"
	criEndpoint = "/run/k3s/containerd/containerd.sock"
)

// the experiments; tests/test_chaosblade_k8s.py runs their commands against a container whose
// pid 1 is tests/fixtures/cri_target (process name crisvc), which has these functions
var opCases = []opCase{
	{"container-return", "container", "return",
		map[string]string{"func": "main.Query", "value": `"op",error:db is down`, "pid": "1"},
		[]string{"--func=main.Query", "--pid=1", `--value="op",error:db@@##is@@##down`}},
	{"container-delay", "container", "delay",
		map[string]string{"func": "main.Slow", "time": "300", "effect-count": "2", "pid": "1"},
		[]string{"--effect-count=2", "--func=main.Slow", "--pid=1", "--time=300"}},
	{"pod-panic", "pod", "panic",
		map[string]string{"func": "main.Risky", "value": "error:operator panic", "effect-count": "1",
			"process-cmd": "crisvc"},
		[]string{"--effect-count=1", "--func=main.Risky", "--process-cmd=crisvc", "--value=error:operator@@##panic"}},
	{"pod-args", "pod", "args",
		map[string]string{"func": "main.Greet", "set": `name="mallory"`, "effect-percent": "100",
			"process-cmd": "crisvc"},
		[]string{"--effect-percent=100", "--func=main.Greet", "--process-cmd=crisvc", `--set=name="mallory"`}},
}

func resourceMatchers(c opCase) []v1alpha1.FlagSpec {
	m := []v1alpha1.FlagSpec{{Name: "namespace", Value: []string{"shop"}}}
	if c.Scope == "container" {
		m = append(m, v1alpha1.FlagSpec{Name: "names", Value: []string{"shop-0"}},
			v1alpha1.FlagSpec{Name: "container-names", Value: []string{"app"}})
	} else {
		m = append(m, v1alpha1.FlagSpec{Name: "labels", Value: []string{"app=shop"}})
	}
	keys := make([]string, 0, len(c.Matchers))
	for k := range c.Matchers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m = append(m, v1alpha1.FlagSpec{Name: k, Value: []string{c.Matchers[k]}})
	}
	return append(m, v1alpha1.FlagSpec{Name: "cri-endpoint", Value: []string{criEndpoint}})
}

// normalized: the operator writes the action's flags in Go map order; sort that middle part
func normalized(argv []string, head int, tail int) []string {
	out := append([]string{}, argv...)
	if len(out) >= head+tail {
		sort.Strings(out[head : len(out)-tail])
	}
	return out
}

func newTestClient(t *testing.T, srv *httptest.Server) *channel.Client {
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	target := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-0", Namespace: "shop", Labels: map[string]string{"app": "shop"}},
		Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "app", ContainerID: "containerd://" + containerID, Ready: true, State: running}}},
	}
	tool := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "chaosblade-tool-x7k2p", Namespace: "chaosblade",
			Labels: chaosblade.DaemonsetPodLabels},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: chaosblade.DaemonsetPodName}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
			Name: chaosblade.DaemonsetPodName, ContainerID: "containerd://" + strings.Repeat("7", 64), Ready: true, State: running}}},
	}
	cfg := &rest.Config{Host: srv.URL}
	return &channel.Client{
		Interface: kubernetes.NewForConfigOrDie(cfg),
		Client:    fake.NewFakeClientWithScheme(clientgoscheme.Scheme, target, tool),
		Config:    cfg,
	}
}

func TestCriSpecDeclaredTargetsReachBladeThroughTheOperator(t *testing.T) {
	if version.Version == "unknown" {
		t.Fatal("build with -ldflags -X .../version.Version=<blade version> (the spec file name has it)")
	}
	if id := os.Getenv("BLADE_GO_CONTAINER_ID"); id != "" {
		containerID = id
	}
	if sock := os.Getenv("BLADE_GO_CRI_ENDPOINT"); sock != "" {
		criEndpoint = sock
	}
	chaosblade.DaemonsetPodNamespace = "chaosblade"
	dir, err := ioutil.TempDir("", "operator-yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	specText := []byte(minimalCriSpec)
	if f := os.Getenv("BLADE_GO_CRI_SPEC"); f != "" {
		if specText, err = ioutil.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
	specFile := filepath.Join(dir, fmt.Sprintf("chaosblade-cri-spec-%s.yaml", version.Version))

	uids := map[string]string{} // create argv -> the uid answered
	srv := &execServer{answer: func(argv []string) string {
		if len(argv) > 1 && argv[1] == "create" {
			uid := fmt.Sprintf("%016x", len(uids)+0xb1ade60)
			uids[strings.Join(argv, " ")] = uid
			return fmt.Sprintf(`{"code":200,"success":true,"result":"%s"}`, uid)
		}
		return `{"code":200,"success":true,"result":"destroyed"}`
	}}
	server := httptest.NewServer(srv)
	defer server.Close()
	client := newTestClient(t, server)

	// without the file (stock behaviour): the operator does not know target go
	model.CriSpecPathForYaml = dir
	stock := container.NewExpController(client)
	ctx := model.SetExperimentIdToContext(context.Background(), "no-spec")
	resp := stock.Create(ctx, v1alpha1.ExperimentSpec{Scope: "container", Target: "go", Action: "return",
		Matchers: resourceMatchers(opCases[0])})
	if resp.Success || resp.Code != 56000 {
		t.Fatalf("without the cri spec file: want 56000, got %+v", resp)
	}
	if calls := srv.take(); len(calls) != 0 {
		t.Fatalf("without the cri spec file nothing may be executed, got %+v", calls)
	}

	if err := ioutil.WriteFile(specFile, specText, 0o644); err != nil {
		t.Fatal(err)
	}
	dispatcher := NewDispatcherExecutor(client) // what Reconcile uses
	type record struct {
		Name    string   `json:"name"`
		Scope   string   `json:"scope"`
		Action  string   `json:"action"`
		Create  []string `json:"create"`
		UID     string   `json:"uid"`
		Destroy []string `json:"destroy"`
	}
	records := []record{}
	for _, c := range opCases {
		t.Run(c.Name, func(t *testing.T) {
			expSpec := v1alpha1.ExperimentSpec{Scope: c.Scope, Target: "go", Action: c.Action,
				Desc: "blade-go " + c.Name, Matchers: resourceMatchers(c)}
			status := dispatcher.Create("blade-"+c.Name, expSpec)
			calls := srv.take()
			if !status.Success || len(calls) != 1 || len(status.ResStatuses) != 1 {
				t.Fatalf("create: status %+v, exec calls %+v", status, calls)
			}
			call := calls[0]
			if call.Namespace != "chaosblade" || call.Pod != "chaosblade-tool-x7k2p" || call.Container != "chaosblade-tool" {
				t.Fatalf("executed in the wrong pod: %+v", call)
			}
			// the operator joins "... ACTION" and " --k=v ..." with a space: blade gets an
			// empty argument there (cobra ignores it)
			head := []string{chaosblade.OperatorChaosBladeBlade, "create", "cri", "go", c.Action, ""}
			tail := []string{"--container-id", containerID, "--container-runtime", "containerd"}
			flags := append([]string{"--cri-endpoint=" + criEndpoint}, c.Flags...)
			sort.Strings(flags)
			want := append(append(append([]string{}, head...), flags...), tail...)
			if got := normalized(call.Command, len(head), len(tail)); !reflect.DeepEqual(got, want) {
				t.Fatalf("create command\n got %q\nwant %q", call.Command, want)
			}
			uid := uids[strings.Join(call.Command, " ")]
			if status.ResStatuses[0].Id != uid {
				t.Fatalf("the operator did not keep blade's uid %s: %+v", uid, status.ResStatuses[0])
			}

			status = dispatcher.Destroy("blade-"+c.Name, expSpec, status)
			calls = srv.take()
			if !status.Success || len(calls) != 1 {
				t.Fatalf("destroy: status %+v, exec calls %+v", status, calls)
			}
			head[1] = "destroy"
			tail = append(tail, "--uid", uid)
			want = append(append(append([]string{}, head...), flags...), tail...)
			if got := normalized(calls[0].Command, len(head), len(tail)); !reflect.DeepEqual(got, want) {
				t.Fatalf("destroy command\n got %q\nwant %q", calls[0].Command, want)
			}
			records = append(records, record{c.Name, c.Scope, c.Action, call.Command, uid, calls[0].Command})
			t.Logf("create:  %s", strings.Join(call.Command, " "))
			t.Logf("destroy: %s", strings.Join(calls[0].Command, " "))
		})
	}
	if out := os.Getenv("BLADE_GO_OPERATOR_COMMANDS"); out != "" {
		data, _ := json.MarshalIndent(records, "", " ")
		if err := ioutil.WriteFile(out, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
