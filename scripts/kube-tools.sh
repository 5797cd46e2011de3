#!/usr/bin/env bash
# Builds the kube-apiserver and kubectl pinned in tools/kube-apiserver/go.mod
# into a cache outside the checkout, keyed by a hash of go.mod and go.sum,
# and prints the directory holding them. A cold build compiles most of
# Kubernetes (about 10 minutes on 2 vCPUs); later runs reuse the binaries.
# KVSQL_TOOL_CACHE overrides the cache root (default: kvsql/ beside Go's
# build cache, ~/.cache/kvsql), which outlives checkouts as that cache does.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/tools/kube-apiserver"
version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$mod/go.mod")"
key="$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-12)"
dir="${KVSQL_TOOL_CACHE:-$(dirname "$(go env GOCACHE)")/kvsql}/kubernetes-$version-$key"

if [ ! -x "$dir/kube-apiserver" ] || [ ! -x "$dir/kubectl" ]; then
	mkdir -p "$dir"
	start=$(date +%s)
	echo "kube-tools: building kube-apiserver and kubectl $version into $dir" >&2
	(cd "$mod" && go build -buildvcs=false -trimpath -o "$dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
	(cd "$mod" && go build -buildvcs=false -trimpath -o "$dir/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl)
	mv "$dir/kube-apiserver.tmp" "$dir/kube-apiserver"
	mv "$dir/kubectl.tmp" "$dir/kubectl"
	echo "kube-tools: built in $(($(date +%s) - start)) s" >&2
fi
echo "$dir"
