// Command imageops-health reads the health of Kubernetes objects with the
// libraries GitOps tools use themselves, so that the tests never re-implement
// their rules:
//
//   - kstatus: sigs.k8s.io/cli-utils pkg/kstatus/status.Compute (kubectl's and
//     many CD tools' reader) and Flux's fork github.com/fluxcd/cli-utils;
//   - Flux's wait: github.com/fluxcd/pkg/ssa ResourceManager.WaitForSet, the
//     `wait: true` path of kustomize-controller, polling the live objects;
//   - Argo CD: a health script run by github.com/yuin/gopher-lua with the
//     libraries Argo CD's util/lua opens for an argocd-cm health script
//     (see argocd.go).
//
// Usage:
//
//	imageops-health status --script FILE [--kubeconfig K RESOURCE/NAME...] < objects.json
//	imageops-health wait --kubeconfig K [--timeout 5s] [--interval 1s] [--fail-fast] NS/KIND/NAME...
//
// status reads one object or a List from stdin (or, with arguments, the
// named objects of --namespace from the API server) and prints one JSON line
// per object. wait prints {"ok": bool, "error": "..."}: ok is what Flux's
// Kustomization would see (nil error from WaitForSet).
package main

import (
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: imageops-health status|wait [flags] ...")
	}
	var err error
	switch os.Args[1] {
	case "status":
		err = runStatus(os.Args[2:])
	case "wait":
		err = runWait(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (status, wait)", os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "imageops-health:", msg)
	os.Exit(2)
}

func emit(v any) error {
	out, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(out))
	return err
}
