package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// waitResult is what kustomize-controller's `wait: true` would conclude.
type waitResult struct {
	OK      bool    `json:"ok"`
	Error   string  `json:"error,omitempty"`
	Seconds float64 `json:"seconds"`
}

func runWait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig")
	timeout := fs.Duration("timeout", 5*time.Second, "WaitOptions.Timeout")
	interval := fs.Duration("interval", time.Second, "WaitOptions.Interval")
	failFast := fs.Bool("fail-fast", false, "WaitOptions.FailFast")
	if err := fs.Parse(args); err != nil {
		return err
	}
	set, err := objects(fs.Args())
	if err != nil {
		return err
	}
	manager, err := resourceManager(*kubeconfig)
	if err != nil {
		return err
	}
	start := time.Now()
	werr := manager.WaitForSet(set, ssa.WaitOptions{Interval: *interval, Timeout: *timeout, FailFast: *failFast})
	result := waitResult{OK: werr == nil, Seconds: time.Since(start).Seconds()}
	if werr != nil {
		result.Error = werr.Error()
	}
	return emit(result)
}

// objects parses NAMESPACE/KIND/NAME (kinds of the imageops.dev group).
func objects(args []string) (object.ObjMetadataSet, error) {
	var set object.ObjMetadataSet
	for _, arg := range args {
		parts := strings.Split(arg, "/")
		if len(parts) != 3 {
			return nil, fmt.Errorf("%q: want NAMESPACE/KIND/NAME", arg)
		}
		set = append(set, object.ObjMetadata{
			Namespace: parts[0], Name: parts[2],
			GroupKind: schema.GroupKind{Group: group, Kind: parts[1]},
		})
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("no objects to wait for")
	}
	return set, nil
}

// resourceManager builds the ssa ResourceManager as kustomize-controller does:
// a controller-runtime client and kstatus' StatusPoller on the same mapper.
func resourceManager(kubeconfig string) (*ssa.ResourceManager, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	kube, err := client.New(cfg, client.Options{HTTPClient: httpClient, Mapper: mapper})
	if err != nil {
		return nil, err
	}
	poller := polling.NewStatusPoller(kube, mapper, polling.Options{})
	return ssa.NewResourceManager(kube, poller, ssa.Owner{Field: "imageops-health", Group: group}), nil
}
