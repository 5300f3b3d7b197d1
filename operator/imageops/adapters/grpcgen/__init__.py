"""Generated gRPC stubs of the CRI and containerd APIs (hack/gen_grpc.py; do not edit)."""
