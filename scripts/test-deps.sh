#!/usr/bin/env bash
# Installs what `make test` needs beyond Go, where it can: the PostgreSQL and
# MariaDB server binaries the integration tests start throwaway instances
# from, Prometheus (TestEtcdMixinAlerts evaluates etcd's alerts with it and
# promtool) — none started as a system service —, gcc for -race, make. As root with apt-get
# it installs the missing Debian packages; otherwise it names them and the
# tests that need them skip (or fail under CI=true).
set -euo pipefail

packages=()
command -v gcc >/dev/null || packages+=(gcc libc6-dev) # go test -race needs cgo
[ -e /etc/ssl/certs/ca-certificates.crt ] || packages+=(ca-certificates) # Go module proxy
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null || packages+=(postgresql)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || packages+=(mariadb-server)
command -v prometheus >/dev/null && command -v promtool >/dev/null || packages+=(prometheus)

((${#packages[@]})) || exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
	echo "test-deps: missing ${packages[*]}: install these packages (Debian: apt-get install ${packages[*]});" \
		"the tests that need them are skipped until then" >&2
	exit 0
fi

echo "test-deps: installing ${packages[*]}"
# Keep package scripts from starting system services (databases, prometheus).
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod +x "$policy"
	trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
