"""A real Kubernetes control plane on loopback, for the project's tests and demo.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are built from the Go
module proxy by hack/build-binaries.sh; a Python node agent runs pods as local processes.
"""
