#!/usr/bin/env bash
# Builds the kine pinned in tools/kine/go.mod into a cache outside the
# checkout, keyed by a hash of go.mod and go.sum, and prints the directory
# holding it (the migration tests run it as a real kine to migrate from).
# KVSQL_TOOL_CACHE overrides the cache root (default: kvsql/ beside Go's
# build cache, ~/.cache/kvsql), as for scripts/kube-tools.sh.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/tools/kine"
version="$(awk '$1 == "require" && $2 == "github.com/k3s-io/kine" {print $3}' "$mod/go.mod")"
key="$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-12)"
dir="${KVSQL_TOOL_CACHE:-$(dirname "$(go env GOCACHE)")/kvsql}/kine-$version-$key"

if [ ! -x "$dir/kine" ]; then
	mkdir -p "$dir"
	start=$(date +%s)
	echo "kine: building kine $version into $dir" >&2
	(cd "$mod" && go build -buildvcs=false -trimpath -o "$dir/kine.tmp" github.com/k3s-io/kine)
	mv "$dir/kine.tmp" "$dir/kine"
	echo "kine: built in $(($(date +%s) - start)) s" >&2
fi
echo "$dir"
