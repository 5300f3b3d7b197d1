//go:build tools

// Package tools records the helm-docs command hack/build-tools.sh builds, so that
// `go mod tidy` keeps its dependencies. It sits in its own module (and cache key)
// so that pinning it never rebuilds helm or the Kubernetes binaries.
package tools

import (
	_ "github.com/norwoodj/helm-docs/cmd/helm-docs"
)
