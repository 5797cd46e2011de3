//go:build tools

// Package tools pins kube-apiserver and kubectl for the Kubernetes
// end-to-end tests: built from the module proxy by version, never copied
// into this repository.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
