//go:build tools

// Package tools records the helm command hack/build-tools.sh builds, so that
// `go mod tidy` keeps its dependencies. Helm sits in its own module because it
// pins other Kubernetes library versions than kube-apiserver in ../go.mod.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
