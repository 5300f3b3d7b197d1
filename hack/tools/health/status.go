package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	fluxstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// verdict is one library's reading of one object.
type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

// report is every library's reading of one object.
type report struct {
	Kind        string  `json:"kind"`
	Name        string  `json:"name"`
	KStatus     verdict `json:"kstatus"`
	FluxKStatus verdict `json:"fluxKstatus"`
	// ArgoCD is the script with useOpenLibs unset (Argo CD's default for an
	// argocd-cm health key), ArgoCDOpenLibs with `useOpenLibs: true`.
	ArgoCD         verdict `json:"argocd"`
	ArgoCDOpenLibs verdict `json:"argocdOpenLibs"`
}

func runStatus(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	script := fs.String("script", "", "Argo CD health script (Lua)")
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig (with RESOURCE/NAME arguments)")
	namespace := fs.String("namespace", "default", "namespace of RESOURCE/NAME arguments")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *script == "" {
		return fmt.Errorf("--script is required")
	}
	source, err := os.ReadFile(*script)
	if err != nil {
		return err
	}
	var objs []*unstructured.Unstructured
	if fs.NArg() > 0 {
		objs, err = fetch(*kubeconfig, *namespace, fs.Args())
	} else {
		objs, err = readStdin()
	}
	if err != nil {
		return err
	}
	for _, obj := range objs {
		if err := emit(judge(obj, string(source))); err != nil {
			return err
		}
	}
	return nil
}

func judge(obj *unstructured.Unstructured, script string) report {
	r := report{Kind: obj.GetKind(), Name: obj.GetName()}
	if res, err := kstatus.Compute(obj); err != nil {
		r.KStatus = verdict{Status: "Error", Error: err.Error()}
	} else {
		r.KStatus = verdict{Status: res.Status.String(), Message: res.Message}
	}
	if res, err := fluxstatus.Compute(obj); err != nil {
		r.FluxKStatus = verdict{Status: "Error", Error: err.Error()}
	} else {
		r.FluxKStatus = verdict{Status: res.Status.String(), Message: res.Message}
	}
	r.ArgoCD = argoHealth(obj, script, false)
	r.ArgoCDOpenLibs = argoHealth(obj, script, true)
	return r
}

// readStdin decodes one object or a List the way client-go decodes API
// responses (integers as int64), which is what Argo CD and kstatus receive.
func readStdin() ([]*unstructured.Unstructured, error) {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return nil, err
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("stdin: %w", err)
	}
	if !obj.IsList() {
		return []*unstructured.Unstructured{obj}, nil
	}
	list, err := obj.ToList()
	if err != nil {
		return nil, err
	}
	result := make([]*unstructured.Unstructured, 0, len(list.Items))
	for i := range list.Items {
		result = append(result, &list.Items[i])
	}
	return result, nil
}

// fetch reads RESOURCE/NAME objects of the imageops.dev API group.
func fetch(kubeconfig, namespace string, names []string) ([]*unstructured.Unstructured, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	var result []*unstructured.Unstructured
	for _, name := range names {
		resource, objName, ok := strings.Cut(name, "/")
		if !ok {
			return nil, fmt.Errorf("%q: want RESOURCE/NAME", name)
		}
		gvr := schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
		obj, err := client.Resource(gvr).Namespace(namespace).Get(context.Background(), objName, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		result = append(result, obj)
	}
	return result, nil
}

const (
	group   = "imageops.dev"
	version = "v1alpha1"
)
