//go:build tools

// Package tools records the commands hack/build-tools.sh builds for the
// containerd 2.x node of the test bed (containerd, its runc shim, ctr) and
// crictl, so that `go mod tidy` keeps their dependencies. A module of its
// own: its pins must not change the cache key of the Kubernetes binaries.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
