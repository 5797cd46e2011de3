#!/usr/bin/env bash
# bench/run.sh: kvsql against etcd 3.6 (and, on PostgreSQL and MySQL, against
# kine on the same database server), measured in one run with etcd's own
# benchmark tool (go.etcd.io/etcd/v3/tools/benchmark) and bench/watchlat.
#
# Builds kvsql (pure-Go SQLite driver, the default), kvsql -tags sqlite_cgo
# (mattn/go-sqlite3), etcd 3.6, etcdctl 3.6, the benchmark tool, kine (from
# tools/kine/go.mod) and bench/watchlat into .cache/bench/bin, starts every
# server on fresh data and free 127.0.0.1 ports with its default durability
# (etcd fsyncs its WAL, kvsql SQLite runs synchronous=FULL, PostgreSQL runs
# fsync=on with synchronous_commit=on, MariaDB runs
# innodb_flush_log_at_trx_commit=1 and sync_binlog=1), runs each workload on
# each server in turn, prints markdown tables and stops the servers.
# docs/benchmarks.md explains the workloads and records runs.
#
# PostgreSQL and MariaDB are throwaway servers this script initialises in
# $TMPDIR and starts on free loopback ports (as the postgres / mysql users
# when run as root), one of each, shared by every target of that kind; each
# kvsql or kine target gets its own fresh database on it. The machine's own
# database services are never used.
#
# Targets:
#   etcd                  etcd 3.6, one member
#   kvsql, kvsql-cgo      kvsql on embedded SQLite (pure-Go / cgo driver)
#   kvsql-pg, kine-pg     kvsql / kine on the throwaway PostgreSQL
#   kvsql-mysql, kine-mysql  kvsql / kine on the throwaway MariaDB
#   kvsql-base-pg, kvsql-base-mysql  the kvsql binary BENCH_BASE_KVSQL (built
#                         from another tree, e.g. the last commit) on the same
#                         servers: an A/B comparison within one run
#   TARGET-auth           any target above with auth enabled (etcd, kvsql,
#                         kvsql-pg, kvsql-mysql, ...): a root user, and a
#                         user "bench" whose role reads and writes /bench/,
#                         load/ and lat/ only; every workload runs as
#                         "bench" with a simple token (put-1 and put-64
#                         write random binary keys outside those prefixes:
#                         use the -text variants)
#
# Workloads (BENCH_WORKLOADS):
#   put-1 put-64 range-1key-1 range-1key-64 range-1000keys-16 watch-latency
#       etcd's benchmark tool; see describe() below
#   put-1-text put-64-text  put-1 and put-64 with printable keys
#                      /bench/put/000000..099999 (bench/watchlat -fill): kine
#                      keeps keys in a text column and rejects the benchmark
#                      tool's binary keys
#   cas-64             Kubernetes-shaped CAS (get; txn if mod_revision = r then
#                      put else get) by 64 writers for BENCH_CAS_TIME (8s)
#   count-10000keys-16 range --count-only over a 10000-key prefix, 16 clients
#   watch-xinst-idle   write through instance A, watch through instance B
#                      (kvsql-*/kine-*: three instances on one database; etcd
#                      and SQLite kvsql: their one endpoint), bench/watchlat
#   watch-xinst-load   the same while 16 CAS writers load each of the three
#                      instances, each writer as fast as it can (the machine
#                      saturates: every server's p99 is then CPU queueing)
#   watch-xinst-paced  the same 48 writers paced to BENCH_PACED_RATE (400)
#                      CAS attempts per second in all
#   range-1000keys-16-hist  range-1000keys-16 after BENCH_HISTORY (100000)
#                      more revisions of updates to those 1000 keys
#
# Environment:
#   BENCH_SET       shorthand for targets + workloads: "sqlite" (the default:
#                   etcd kvsql kvsql-cgo, the six benchmark-tool workloads),
#                   "sql" (etcd kvsql-pg kine-pg kvsql-mysql kine-mysql, every
#                   workload but watch-latency), "pg" or "mysql" (that half
#                   of "sql")
#   BENCH_TARGETS   servers to measure (overrides the set's; kvsql-cgo is
#                   skipped when there is no C compiler)
#   BENCH_WORKLOADS workloads to run (overrides the set's)
#   BENCH_ROUNDS    rounds of every workload (default 5 for "sqlite", 3
#                   otherwise); the tables show the median of each column and
#                   the per-round spread
#   BENCH_CAS_TIME  duration of one cas-64 measurement (default 8s)
#   BENCH_PACED_RATE  CAS attempts per second of watch-xinst-paced's load
#   BENCH_HISTORY   revisions written before range-1000keys-16-hist (100000)
#   BENCH_QUICK=1   a tenth of the requests and one round, to check the
#                   script itself
#   BENCH_CACHE     build and results directory (default <repo>/.cache/bench)
#   TMPDIR          where the data directories go; must be a real disk, not
#                   tmpfs, or fsync costs nothing
#   BENCH_KVSQL_MYSQL_PARAMS  driver parameters appended to kvsql-mysql's
#                   endpoint (e.g. interpolateParams=true)
#   BENCH_KVSQL_PG_PARAMS  the same for kvsql-pg (e.g. pool_max_conns=32)
#   BENCH_BASE_KVSQL  the kvsql binary the kvsql-base-* targets run, e.g.
#                   git worktree add /tmp/kvsql-base HEAD &&
#                   (cd /tmp/kvsql-base && CGO_ENABLED=0 go build -o /tmp/kvsql-base.bin ./cmd/kvsql)
#   PG_BIN          PostgreSQL server binaries (default: the newest
#                   /usr/lib/postgresql/*/bin)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BENCH_CACHE:-$ROOT/.cache/bench}
BIN=$CACHE/bin
SET=${BENCH_SET:-sqlite}
SQL_WORKLOADS="put-1-text put-64-text cas-64 range-1key-1 range-1key-64 range-1000keys-16 count-10000keys-16 watch-xinst-idle watch-xinst-load watch-xinst-paced range-1000keys-16-hist"
case $SET in
sqlite)
	DEF_TARGETS="etcd kvsql kvsql-cgo"
	DEF_WORKLOADS="put-1 put-64 range-1key-1 range-1key-64 range-1000keys-16 watch-latency"
	DEF_ROUNDS=5
	;;
sql) DEF_TARGETS="etcd kvsql-pg kine-pg kvsql-mysql kine-mysql" DEF_WORKLOADS=$SQL_WORKLOADS DEF_ROUNDS=3 ;;
pg) DEF_TARGETS="etcd kvsql-pg kine-pg" DEF_WORKLOADS=$SQL_WORKLOADS DEF_ROUNDS=3 ;;
mysql) DEF_TARGETS="etcd kvsql-mysql kine-mysql" DEF_WORKLOADS=$SQL_WORKLOADS DEF_ROUNDS=3 ;;
*) printf 'bench/run.sh: unknown BENCH_SET %s\n' "$SET" >&2; exit 1 ;;
esac
TARGETS=${BENCH_TARGETS:-$DEF_TARGETS}
QUICK=${BENCH_QUICK:-0}
ROUNDS=${BENCH_ROUNDS:-$DEF_ROUNDS}
[ "$QUICK" = 1 ] && ROUNDS=${BENCH_ROUNDS:-1}
CAS_TIME=${BENCH_CAS_TIME:-8s}
PACED_RATE=${BENCH_PACED_RATE:-400}
HISTORY=${BENCH_HISTORY:-100000}
STEP_TIMEOUT=180 # seconds; no single benchmark invocation may run longer

log() { printf '>> %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }

if ! command -v gcc >/dev/null 2>&1 && ! command -v cc >/dev/null 2>&1; then
	TARGETS=$(printf '%s\n' $TARGETS | grep -vx kvsql-cgo | tr '\n' ' ')
	log "no C compiler: skipping kvsql-cgo"
fi

# n COUNT: COUNT requests, or a tenth of them with BENCH_QUICK=1.
n() { if [ "$QUICK" = 1 ]; then echo $(($1 / 10)); else echo "$1"; fi; }

# ---- build -----------------------------------------------------------------

mkdir -p "$BIN"
log "building into $BIN"
# The default kvsql as released: pure Go, CGO_ENABLED=0, a static binary.
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN/kvsql" ./cmd/kvsql)
case " $TARGETS " in *" kvsql-cgo "*)
	(cd "$ROOT" && CGO_ENABLED=1 go build -tags sqlite_cgo -o "$BIN/kvsql-cgo" ./cmd/kvsql) ;;
esac
(cd "$ROOT/tools/etcd" && go build -o "$BIN/etcd" go.etcd.io/etcd/server/v3 &&
	go build -o "$BIN/etcdctl" go.etcd.io/etcd/etcdctl/v3)
(cd "$ROOT/tools/benchmark" && go build -o "$BIN/benchmark" go.etcd.io/etcd/v3/tools/benchmark)
(cd "$ROOT" && go build -o "$BIN/watchlat" ./bench/watchlat)
case " $TARGETS " in *" kine-"*)
	(cd "$ROOT/tools/kine" && go build -o "$BIN/kine" github.com/k3s-io/kine) ;;
esac

# ---- servers ----------------------------------------------------------------

RUN=$CACHE/run-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RUN"
DATA=$(mktemp -d "${TMPDIR:-/tmp}/kvsql-bench.XXXXXX")
chmod 755 "$DATA" # the database servers run as their own users
# PID and PORT are keyed by instance: TARGET for the first, TARGET.b and
# TARGET.c for the extra instances of the cross-instance watch workloads.
declare -A PID PORT
PGPID= MYPID=
used_ports=" "
LOADPID=

cleanup() {
	local t p
	if [ -n "$LOADPID" ]; then kill "$LOADPID" 2>/dev/null || true; fi
	for t in "${!PID[@]}"; do kill "${PID[$t]}" 2>/dev/null || true; done
	for t in "${!PID[@]}"; do
		timeout 15 tail --pid="${PID[$t]}" -f /dev/null 2>/dev/null || kill -KILL "${PID[$t]}" 2>/dev/null || true
		wait "${PID[$t]}" 2>/dev/null || true
	done
	# PostgreSQL: SIGINT is its fast shutdown; MariaDB shuts down on SIGTERM.
	[ -n "$PGPID" ] && kill -INT "$PGPID" 2>/dev/null || true
	[ -n "$MYPID" ] && kill -TERM "$MYPID" 2>/dev/null || true
	for p in $PGPID $MYPID; do
		timeout 60 tail --pid="$p" -f /dev/null 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
	done
	rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port VAR: set VAR to a 127.0.0.1 port nothing listens on and this
# script has not handed out yet (bounded number of tries), below the
# kernel's ephemeral range, so that no client connection can take it before
# the server binds it. Not called in a $(...) subshell, so that used_ports
# and RANDOM advance.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$EPHEMERAL_LOW" -gt 12000 ] || EPHEMERAL_LOW=61000
free_port() {
	local -n port_=$1
	local try_ cand_
	for try_ in $(seq 1 200); do
		cand_=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
		case "$used_ports" in *" $cand_ "*) continue ;; esac
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$cand_") 2>/dev/null; then
			used_ports="$used_ports$cand_ "
			port_=$cand_
			return 0
		fi
	done
	die "no free port found"
}

# AS_PG, AS_MY: the command prefix that runs a server as the postgres /
# mysql user when root (PostgreSQL refuses root), else nothing. setpriv
# execs, so $! is the server's own pid.
AS_PG=() AS_MY=()
if [ "$(id -u)" = 0 ]; then
	AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)
	AS_MY=(setpriv --reuid=mysql --regid=mysql --init-groups --)
fi

PGPORT= MYPORT=
PGDIR=$DATA/postgres MYDIR=$DATA/mariadb

start_postgres() {
	local bin d
	bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n | tail -1)}
	[ -x "$bin/initdb" ] || die "no PostgreSQL server binaries (install postgresql or set PG_BIN)"
	mkdir -p "$PGDIR"
	[ "$(id -u)" = 0 ] && chown postgres: "$PGDIR"
	"${AS_PG[@]}" "$bin/initdb" -D "$PGDIR/data" -U kvsql --auth=trust --encoding=UTF8 --no-sync \
		>"$RUN/postgres-initdb.log" 2>&1 || die "initdb failed; see $RUN/postgres-initdb.log"
	free_port PGPORT
	# Durable as shipped (fsync=on, synchronous_commit=on); larger caches
	# than the defaults, as any server for this would have.
	"${AS_PG[@]}" "$bin/postgres" -D "$PGDIR/data" -p "$PGPORT" -k "$PGDIR" -c listen_addresses=127.0.0.1 \
		-c fsync=on -c synchronous_commit=on -c max_connections=400 -c shared_buffers=128MB \
		>"$RUN/postgres.log" 2>&1 &
	PGPID=$!
	for _ in $(seq 1 60); do
		if psql -h 127.0.0.1 -p "$PGPORT" -U kvsql -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
			log "PostgreSQL $("$bin/postgres" --version | awk '{print $NF}') on 127.0.0.1:$PGPORT"
			return 0
		fi
		sleep 0.5
	done
	die "PostgreSQL did not start; see $RUN/postgres.log"
}

start_mariadb() {
	local installdb mysqld
	installdb=$(command -v mariadb-install-db || command -v mysql_install_db) || die "no mariadb-install-db (install mariadb-server)"
	mysqld=$(command -v mariadbd || command -v /usr/sbin/mariadbd || command -v mysqld || command -v /usr/sbin/mysqld) || die "no mariadbd"
	mkdir -p "$MYDIR"
	local user=()
	if [ "$(id -u)" = 0 ]; then chown mysql: "$MYDIR"; user=(--user=mysql); fi
	"$installdb" --no-defaults --datadir="$MYDIR/data" --auth-root-authentication-method=normal --skip-test-db \
		"${user[@]}" >"$RUN/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $RUN/mariadb-install.log"
	free_port MYPORT
	# Durable (kvsql's documented requirements): every commit flushed to the
	# InnoDB log and the binlog; ROW binlog with full images.
	"${AS_MY[@]}" "$mysqld" --no-defaults --datadir="$MYDIR/data" --socket="$MYDIR/mysqld.sock" --port="$MYPORT" \
		--bind-address=127.0.0.1 --pid-file="$MYDIR/mysqld.pid" --skip-name-resolve \
		--innodb-flush-log-at-trx-commit=1 --sync-binlog=1 --max-connections=500 --max-allowed-packet=64M \
		--innodb-buffer-pool-size=128M --log-bin="$MYDIR/data/binlog" --binlog-format=ROW \
		--binlog-row-image=FULL --server-id=1 >"$RUN/mariadb.log" 2>&1 &
	MYPID=$!
	for _ in $(seq 1 120); do
		if mariadb --no-defaults --socket="$MYDIR/mysqld.sock" -u root -e 'select 1' >/dev/null 2>&1; then
			mariadb --no-defaults --socket="$MYDIR/mysqld.sock" -u root \
				-e "CREATE USER 'kvsql'@'%'; GRANT ALL PRIVILEGES ON *.* TO 'kvsql'@'%';" ||
				die "creating the MariaDB user failed"
			log "MariaDB $("$mysqld" --version | awk '{print $3}') on 127.0.0.1:$MYPORT"
			return 0
		fi
		sleep 0.5
	done
	die "MariaDB did not start; see $RUN/mariadb.log"
}

# db_url TARGET: the fresh database of a kvsql-*/kine-* target, created on
# first use (every instance of the target shares it).
declare -A DBMADE
db_url() {
	local t=$1 db=${1//-/_}
	case ${t%-auth} in
	*-pg)
		if [ -z "${DBMADE[$t]:-}" ]; then
			psql -h 127.0.0.1 -p "$PGPORT" -U kvsql -d postgres -qc "CREATE DATABASE $db" >/dev/null || die "create database $db"
			DBMADE[$t]=1
		fi
		echo "postgres://kvsql@127.0.0.1:$PGPORT/$db?sslmode=disable$(case $t in kvsql-*) [ -n "${BENCH_KVSQL_PG_PARAMS:-}" ] && echo "&$BENCH_KVSQL_PG_PARAMS" ;; esac)"
		;;
	*-mysql)
		if [ -z "${DBMADE[$t]:-}" ]; then
			mariadb --no-defaults --socket="$MYDIR/mysqld.sock" -u root -e "CREATE DATABASE $db" || die "create database $db"
			DBMADE[$t]=1
		fi
		echo "mysql://kvsql@tcp(127.0.0.1:$MYPORT)/$db$(case $t in kvsql-*) [ -n "${BENCH_KVSQL_MYSQL_PARAMS:-}" ] && echo "?$BENCH_KVSQL_MYSQL_PARAMS" ;; esac)"
		;;
	esac
}

ctl() { timeout 60 "$BIN/etcdctl" --endpoints "127.0.0.1:${PORT[$1]}" --dial-timeout 2s --command-timeout 30s $(root_user "$1") "${@:2}"; }

# TARGET-auth targets: AUTHED[TARGET] is set once auth is enabled on it.
declare -A AUTHED
is_auth() { case ${1%%.*} in *-auth) return 0 ;; esac; return 1; }
# root_user INSTANCE: etcdctl's --user for an auth target's setup and checks.
root_user() { [ -n "${AUTHED[${1%%.*}]:-}" ] && echo "--user=root:bench-root"; return 0; }
# bench_user INSTANCE FLAG: FLAG bench:bench for auth targets (the tenant
# user every workload runs as).
bench_user() { is_auth "$1" && echo "$2" "bench:bench"; return 0; }

# setup_auth TARGET: root, the tenant user "bench" confined to the
# workloads' prefixes, auth enabled.
setup_auth() {
	local t=$1 p
	ctl "$t" user add root:bench-root >/dev/null &&
		ctl "$t" user grant-role root root >/dev/null &&
		ctl "$t" role add bench >/dev/null &&
		for p in /bench/ load/ lat/; do ctl "$t" role grant-permission bench readwrite "$p" --prefix >/dev/null || return 1; done &&
		ctl "$t" user add bench:bench >/dev/null &&
		ctl "$t" user grant-role bench bench >/dev/null &&
		ctl "$t" auth enable >/dev/null || die "$t: setting up auth failed"
	AUTHED[$t]=1
	log "$t: auth enabled; workloads run as user bench"
}

# start INSTANCE: start TARGET (INSTANCE is TARGET, TARGET.b or TARGET.c).
start() {
	local i=$1 t=${1%%.*} p pp url
	free_port p
	PORT[$i]=$p
	case ${t%-auth} in
	*-pg | *-mysql)
		url=$(db_url "$t")
		DBMADE[$t]=1 # db_url ran in a subshell
		;;
	esac
	case ${t%-auth} in
	etcd)
		free_port pp
		"$BIN/etcd" --name bench --data-dir "$DATA/$t" \
			--listen-client-urls "http://127.0.0.1:$p" --advertise-client-urls "http://127.0.0.1:$p" \
			--listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
			--initial-cluster "bench=http://127.0.0.1:$pp" --log-level warn >"$RUN/$i.log" 2>&1 &
		;;
	kvsql | kvsql-cgo)
		"$BIN/${t%-auth}" --listen-client-urls "http://127.0.0.1:$p" --data-dir "$DATA/$t" \
			--log-level warn >"$RUN/$i.log" 2>&1 &
		;;
	kvsql-pg | kvsql-mysql)
		"$BIN/kvsql" --endpoint "$url" --name "$i" --listen-client-urls "http://127.0.0.1:$p" \
			--log-level warn >"$RUN/$i.log" 2>&1 &
		;;
	kvsql-base-pg | kvsql-base-mysql)
		[ -x "${BENCH_BASE_KVSQL:-}" ] || die "$t needs BENCH_BASE_KVSQL, a kvsql binary"
		"$BENCH_BASE_KVSQL" --endpoint "$url" --name "$i" --listen-client-urls "http://127.0.0.1:$p" \
			--log-level warn >"$RUN/$i.log" 2>&1 &
		;;
	kine-pg | kine-mysql)
		# kine's defaults (1 s poll interval, no auto-compaction); no
		# metrics listener, so that three instances can run.
		"$BIN/kine" --endpoint "$url" --listen-address "127.0.0.1:$p" --metrics-bind-address 0 \
			>"$RUN/$i.log" 2>&1 &
		;;
	*) die "unknown target $t" ;;
	esac
	PID[$i]=$!
	local k
	for k in $(seq 1 60); do
		if timeout 10 "$BIN/etcdctl" --endpoints "127.0.0.1:$p" --dial-timeout 2s --command-timeout 5s \
			$(root_user "$i") put /bench/ready 1 >/dev/null 2>&1; then
			log "$i listening on 127.0.0.1:$p (pid ${PID[$i]})"
			return 0
		fi
		kill -0 "${PID[$i]}" 2>/dev/null || die "$i exited; see $RUN/$i.log"
		sleep 0.5
	done
	die "$i did not answer within 30s; see $RUN/$i.log"
}

stop() {
	local i=$1
	[ -n "${PID[$i]:-}" ] || return 0
	kill "${PID[$i]}" 2>/dev/null || true
	timeout 15 tail --pid="${PID[$i]}" -f /dev/null 2>/dev/null || kill -KILL "${PID[$i]}" 2>/dev/null || true
	wait "${PID[$i]}" 2>/dev/null || true
	unset "PID[$i]"
}

# multi TARGET: whether TARGET runs as several instances on one database.
multi() { case ${1%-auth} in *-pg | *-mysql) return 0 ;; esac; return 1; }

case " $TARGETS " in *-pg" "* | *-pg-auth" "*) start_postgres ;; esac
case " $TARGETS " in *-mysql" "* | *-mysql-auth" "*) start_mariadb ;; esac
for t in $TARGETS; do
	start "$t"
	if is_auth "$t"; then setup_auth "$t"; fi
done
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# The machine's 1-minute load every 10 s (for at most 60 min): numbers from a
# shared machine are only as good as what else ran, so the report says.
for _ in $(seq 1 360); do cut -d' ' -f1 /proc/loadavg; sleep 10; done >"$RUN/load.txt" 2>/dev/null &
LOADPID=$!

# ---- workloads --------------------------------------------------------------

# bench NAME TARGET ARGS...: one benchmark invocation in round $round,
# output kept in $RUN/NAME.TARGET.ROUND.out.
bench() {
	local name=$1 t=$2 out
	shift 2
	out=$RUN/$name.$t.$round
	log "round $round/$ROUNDS: $name on $t"
	if ! timeout "$STEP_TIMEOUT" "$BIN/benchmark" --precise --endpoints "127.0.0.1:${PORT[$t]}" $(bench_user "$t" --user) "$@" \
		>"$out.out" 2>"$out.err"; then
		echo "FAILED or timed out after ${STEP_TIMEOUT}s" >>"$out.out"
	fi
}

# watchlat NAME TARGET ARGS...: one bench/watchlat invocation, like bench.
watchlat() {
	local name=$1 t=$2 out
	shift 2
	out=$RUN/$name.$t.$round
	log "round $round/$ROUNDS: $name on $t"
	# WL_MAXTIME: when watchlat stops timing and reports what it has.
	local mt=${WL_MAXTIME:-$((STEP_TIMEOUT - 10))s}
	if ! timeout "$STEP_TIMEOUT" "$BIN/watchlat" -max-time "$mt" $(bench_user "$t" -user) "$@" >"$out.out" 2>"$out.err"; then
		echo "FAILED or timed out after ${STEP_TIMEOUT}s" >>"$out.out"
	fi
}

# fill TARGET PREFIX KEYS PUTS: PUTS single-key puts over KEYS keys
# PREFIX000000..., 64 writers (kine cannot put many keys in one txn).
fill() {
	local t=$1 prefix=$2 keys=$3 puts=$4 out
	out=$RUN/fill.$t.${prefix//\//_}$puts
	log "$t: writing $puts puts over $keys keys $prefix"
	timeout 600 "$BIN/watchlat" -max-time 590s $(bench_user "$t" -user) -write "127.0.0.1:${PORT[$t]}" -fill "$puts" -fill-prefix "$prefix" \
		-fill-keys "$keys" -fill-writers 64 >"$out.out" 2>"$out.err" || die "$t: fill $prefix failed; see $out.err"
	cat "$out.out" >&2
}

# keys TARGET PREFIX: how many keys PREFIX holds.
keys() {
	ctl "$1" get --prefix --count-only --write-out=fields "$2" | awk '/"Count"/{print $3}'
}

# load TARGET: the keys the range workloads read: /bench/single, 1000 keys
# under /bench/range/ and (for count-10000keys-16) 10000 under /bench/count/,
# 256-byte values.
load() {
	local t=$1
	ctl "$t" put /bench/single "$(head -c 192 /dev/urandom | base64 -w0)" >/dev/null
	fill "$t" /bench/range/ 1000 1000
	[ "$(keys "$t" /bench/range/)" = 1000 ] || die "$t: loading /bench/range/ did not leave 1000 keys"
	if selected count-10000keys-16; then
		fill "$t" /bench/count/ 10000 10000
		[ "$(keys "$t" /bench/count/)" = 10000 ] || die "$t: loading /bench/count/ did not leave 10000 keys"
	fi
}

# Request counts (BENCH_QUICK=1 divides them by ten).
N_PUT1=$(n 2000)
N_PUT64=$(n 20000)
N_GET1=$(n 5000)
N_GET64=$(n 20000)
N_GET1000=$(n 1000)
N_COUNT=$(n 1000)
N_WATCH=$(n 500)
N_XWATCH=$(n 300)
# In the SQL sets, kine writes at well under 1000 puts/s with 64 clients:
# fewer puts keep the run bounded.
case $SET in sql | pg | mysql) N_PUT64=$(n 10000) ;; esac
N_XWATCH_KINE=$(n 100) # kine's other instances see a write at its next poll (1 s)
[ "$N_XWATCH_KINE" -ge 4 ] || N_XWATCH_KINE=4
[ "$N_XWATCH_KINE" -le 10 ] || N_XWATCH_KINE=10
[ "$QUICK" = 1 ] && CAS_TIME=${BENCH_CAS_TIME:-3s}

# Random 8-byte binary keys out of 100000 (the tool's default key space is a
# single key), random binary 256-byte values, as the tool sends them.
PUT=(put --key-size 8 --val-size 256 --sequential-keys=false --key-space-size 100000)
read -r -a WORKLOADS <<<"${BENCH_WORKLOADS:-$DEF_WORKLOADS}"

# selected NAME: whether workload NAME is to run.
selected() { case " ${WORKLOADS[*]} " in *" $1 "*) return 0 ;; esac; return 1; }

# ep INSTANCE: its endpoint, or the first instance's when INSTANCE does not
# exist (targets that run as a single instance).
ep() { echo "127.0.0.1:${PORT[$1]:-${PORT[${1%%.*}]}}"; }

# workload NAME TARGET: run workload NAME once on TARGET.
workload() {
	local c
	case $1 in
	put-1) bench "$1" "$2" "${PUT[@]}" --clients 1 --conns 1 --total "$N_PUT1" ;;
	put-64) bench "$1" "$2" "${PUT[@]}" --clients 64 --conns 64 --total "$N_PUT64" ;;
	put-1-text) watchlat "$1" "$2" -write "$(ep "$2")" -fill "$N_PUT1" -fill-prefix /bench/put/ -fill-keys 100000 -fill-writers 1 ;;
	put-64-text) watchlat "$1" "$2" -write "$(ep "$2")" -fill "$N_PUT64" -fill-prefix /bench/put/ -fill-keys 100000 -fill-writers 64 ;;
	range-1key-1) bench "$1" "$2" range /bench/single --consistency l --clients 1 --conns 1 --total "$N_GET1" ;;
	range-1key-64) bench "$1" "$2" range /bench/single --consistency l --clients 64 --conns 64 --total "$N_GET64" ;;
	range-1000keys-16 | range-1000keys-16-hist)
		bench "$1" "$2" range /bench/range/ /bench/range0 --consistency l --clients 16 --conns 16 --total "$N_GET1000" ;;
	count-10000keys-16)
		bench "$1" "$2" range /bench/count/ /bench/count0 --count-only --consistency l --clients 16 --conns 16 --total "$N_COUNT" ;;
	# 100 watchers (10 streams × 10) on one key; put-to-event latency at 100 puts/s.
	watch-latency)
		bench "$1" "$2" watch-latency --put-total "$N_WATCH" --put-rate 100 --streams 10 --watchers-per-stream 10 ;;
	cas-64) watchlat "$1" "$2" -write "$(ep "$2")" -watch "$(ep "$2")" -count 0 -load-only "$CAS_TIME" \
		-load "$(ep "$2")" -load-writers 64 ;;
	watch-xinst-idle | watch-xinst-load | watch-xinst-paced)
		c=$N_XWATCH
		case $2 in kine-*) c=$N_XWATCH_KINE ;; esac
		local extra=()
		[ "$1" != watch-xinst-idle ] && extra=(-load "$(ep "$2"),$(ep "$2.b"),$(ep "$2.c")" -load-writers 16)
		[ "$1" = watch-xinst-paced ] && extra+=(-load-rate "$PACED_RATE")
		WL_MAXTIME=$([ "$1" != watch-xinst-idle ] && case $2 in kine-*) echo 30s ;; *) echo 60s ;; esac || echo 60s) watchlat "$1" "$2" -write "$(ep "$2")" -watch "$(ep "$2.b")" -count "$c" "${extra[@]}" ;;
	*) die "unknown workload $1" ;;
	esac
}

# rotate K WORDS...: WORDS, starting at the K-th (mod their number).
rotate() {
	local k=$1 i j
	shift
	for ((i = 0; i < $#; i++)); do
		j=$(((i + k) % $# + 1))
		printf '%s ' "${!j}"
	done
}

# rounds WORKLOAD...: ROUNDS rounds; in each, every given (selected) workload
# on every server in turn. Short steps in a rotating order, so that a burst
# of load from elsewhere on the machine hits all servers alike; the report
# takes the median over the rounds.
rounds() {
	local w t
	for round in $(seq 1 "$ROUNDS"); do
		ORDER=$(rotate $((round - 1)) $TARGETS)
		for w in "$@"; do
			selected "$w" || continue
			for t in $ORDER; do workload "$w" "$t"; done
		done
	done
}

for t in $TARGETS; do load "$t"; done
# Phase 1: one instance per target.
rounds put-1 put-64 put-1-text put-64-text cas-64 range-1key-1 range-1key-64 range-1000keys-16 count-10000keys-16 watch-latency
# Phase 2: three instances of every kvsql-*/kine-* target on its database.
if selected watch-xinst-idle || selected watch-xinst-load || selected watch-xinst-paced; then
	for t in $TARGETS; do
		if multi "$t"; then start "$t.b" && start "$t.c"; fi
	done
	rounds watch-xinst-idle watch-xinst-load watch-xinst-paced
	for t in $TARGETS; do stop "$t.b" && stop "$t.c"; done
fi
# Phase 3: the history grows by HISTORY revisions of updates to the 1000
# range keys (100 per key by default), then the same range again.
if selected range-1000keys-16-hist; then
	for t in $TARGETS; do fill "$t" /bench/range/ 1000 "$(n "$HISTORY")"; done
	rounds range-1000keys-16-hist
fi

# ---- report -----------------------------------------------------------------

# dur_ms: Go durations ("850µs", "1.2ms", "1.5s", "1m2s") on stdin, in ms.
# stats FILE: "req/s avg_ms p99_ms errors" from the last summary in FILE
# (for watch-latency: the watch events summary, i.e. put-to-event latency;
# for cas-64: the CAS rate).
stats() {
	if [ ! -f "$1" ]; then
		echo "FAILED - - -"
		return
	fi
	awk '
	/Summary:/            { rps = avg = p99 = "-"; errs = 0 }
	/Average:/            { avg = sprintf("%.2f", $2 * 1000) }
	/Requests\/sec:/      { rps = sprintf("%.0f", $2) }
	/^ *99% in/           { p99 = sprintf("%.2f", $3 * 1000) }
	/^ *\[[0-9]+\]/       { gsub(/[^0-9]/, "", $1); errs += $1 }
	/puts_per_s=/         { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "puts_per_s") rps = kv[2]; if (kv[1] == "avg_ms") avg = sprintf("%.2f", kv[2]); if (kv[1] == "p99_ms") p99 = sprintf("%.2f", kv[2]) }; errs = 0 }
	/load_cas_per_s=/     { for (i = 1; i <= NF; i++) if ($i ~ /^load_cas_per_s=/) { sub(/.*=/, "", $i); rps = $i }; avg = p99 = "-" }
	/FAILED/              { failed = 1 }
	END { if (failed || rps == "") { print "FAILED - - -" } else { print rps, avg, p99, errs } }
	' "$1"
}

# wstats FILE: "p50 p99 max ack_p99 cas/s" (ms) from a bench/watchlat run.
wstats() {
	if [ ! -f "$1" ] || grep -q FAILED "$1" || ! grep -q put_to_event "$1"; then
		echo "FAILED - - - -"
		return
	fi
	awk '
	function ms(d,   v) {
		v = 0
		while (match(d, /^[0-9.]+(ns|µs|us|ms|s|m|h)/)) {
			tok = substr(d, 1, RLENGTH); d = substr(d, RLENGTH + 1)
			num = tok + 0; unit = tok; sub(/^[0-9.]+/, "", unit)
			v += num * (unit == "ns" ? 1e-6 : unit == "µs" || unit == "us" ? 1e-3 : unit == "ms" ? 1 : unit == "s" ? 1000 : unit == "m" ? 60000 : 3600000)
		}
		return v
	}
	{
		sect = ""; cas = "-"
		for (i = 1; i <= NF; i++) {
			if ($i == "put_to_event" || $i == "ack_to_event") { sect = $i; continue }
			split($i, kv, "=")
			if (kv[1] == "load_cas_per_s") cas = kv[2]
			else if (sect != "" && kv[1] ~ /^(p50|p99|max)$/) val[sect "." kv[1]] = ms(kv[2])
		}
		printf "%.2f %.2f %.2f %.2f %s\n", val["put_to_event.p50"], val["put_to_event.p99"], val["put_to_event.max"], val["ack_to_event.p99"], cas
	}' "$1"
}

# med: the median of each column of the numbers on stdin ("-" stays "-");
# the rows are rounds. Prints "FAILED" if any row is.
med() {
	awk '
	function median(col, n,   i, j, t, a) {
		for (i = 1; i <= n; i++) a[i] = v[i, col]
		for (i = 2; i <= n; i++)
			for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	$1 == "FAILED" { failed = 1; next }
	{ n++; for (c = 1; c <= NF; c++) v[n, c] = $c; nf = NF }
	END {
		if (failed || n == 0) { print "FAILED"; exit }
		for (c = 1; c <= nf; c++) printf "%s%s", (v[1, c] == "-" ? "-" : sprintf("%.2f", median(c, n))), (c < nf ? " " : "\n")
	}'
}

# summary WORKLOAD TARGET: "req/s avg_ms p99_ms errors spread": the median of
# each column over the rounds, errors summed, and the per-round req/s (for
# watch-latency the per-round average latency) as "a / b / c".
summary() {
	local r
	for r in $(seq 1 "$ROUNDS"); do stats "$RUN/$1.$2.$r.out"; done | awk -v watch="$([ "$1" = watch-latency ] && echo 1)" '
	function med(a, n,   i, j, t) {
		for (i = 2; i <= n; i++)
			for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	$1 == "FAILED" { failed = 1; next }
	{ n++; rps[n] = $1; avg[n] = $2; p99[n] = $3; errs += $4; spread = spread (n > 1 ? " / " : "") (watch ? $2 : $1) }
	END {
		if (failed || n == 0) { print "FAILED - - - -"; exit }
		printf "%.0f %s %s %d %s\n", med(rps, n), avg[1] == "-" ? "-" : sprintf("%.2f", med(avg, n)), p99[1] == "-" ? "-" : sprintf("%.2f", med(p99, n)), errs, spread
	}'
}

# wsummary WORKLOAD TARGET: median "p50 p99 max ack_p99 cas/s" over the
# rounds, then the per-round p99s.
wsummary() {
	local r m spread
	m=$(for r in $(seq 1 "$ROUNDS"); do wstats "$RUN/$1.$2.$r.out"; done | med)
	[ "$m" = FAILED ] && m="FAILED - - - -"
	# Per round: the p99, "(n of N)" when -max-time cut the timing short,
	# "none" when not one event arrived in time.
	spread=$(for r in $(seq 1 "$ROUNDS"); do
		f=$RUN/$1.$2.$r.out
		if grep -q put_to_event "$f" 2>/dev/null; then
			printf '%s%s\n' "$(wstats "$f" | awk '{print $2}')" "$(grep -o 'incomplete=[0-9]*_of_[0-9]*' "$f" | sed 's/incomplete=\([0-9]*\)_of_\([0-9]*\)/ (\1 of \2)/')"
		else
			echo none
		fi
	done | paste -sd/ - | sed 's|/| / |g')
	echo "$m $spread"
}

describe() {
	case $1 in
	put-1) echo "put, 1 client, $N_PUT1 × (8 B key, 256 B value)" ;;
	put-64) echo "put, 64 clients, $N_PUT64 × (8 B key, 256 B value)" ;;
	put-1-text) echo "put, 1 client, $N_PUT1 × (17 B text key, 256 B value)" ;;
	put-64-text) echo "put, 64 clients, $N_PUT64 × (17 B text key, 256 B value)" ;;
	cas-64) echo "CAS txn (get; if mod_revision = r then put else get), 64 writers over 64 keys, $CAS_TIME (req/s = successful CAS/s)" ;;
	range-1key-1) echo "range 1 key, linearizable, 1 client, $N_GET1 ×" ;;
	range-1key-64) echo "range 1 key, linearizable, 64 clients, $N_GET64 ×" ;;
	range-1000keys-16) echo "range 1000 keys (256 KB), linearizable, 16 clients, $N_GET1000 ×" ;;
	range-1000keys-16-hist) echo "range 1000 keys (256 KB) after $(n "$HISTORY") more revisions of them, 16 clients, $N_GET1000 ×" ;;
	count-10000keys-16) echo "count 10000 keys (--count-only), linearizable, 16 clients, $N_COUNT ×" ;;
	watch-latency) echo "watch latency put → event, 100 watchers, $N_WATCH puts at 100/s" ;;
	watch-xinst-idle) echo "cross-instance watch, idle" ;;
	watch-xinst-load) echo "cross-instance watch, 16 CAS writers on each of 3 instances" ;;
	watch-xinst-paced) echo "cross-instance watch, the 48 writers paced to $PACED_RATE CAS/s" ;;
	esac
}

{
	echo "kvsql vs etcd 3.6$(case " $TARGETS " in *" kine-"*) echo " and kine" ;; esac) — $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs;" \
		"load average (1/5/15 min) $LOAD_BEFORE before the run, $(cut -d' ' -f1-3 /proc/loadavg) after;" \
		"1-min load during the run $(sort -n "$RUN/load.txt" | sed -n '1p;$p' | paste -sd- -) (min-max, this benchmark included)"
	echo
	echo "kvsql $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '(no git)'), $(go version | cut -d' ' -f3);" \
		"etcd $(awk 'NF >= 2 && $(NF - 1) == "go.etcd.io/etcd/server/v3" {print $NF}' "$ROOT/tools/etcd/go.mod")," \
		"benchmark $(awk 'NF >= 2 && $(NF - 1) == "go.etcd.io/etcd/v3" {print $NF}' "$ROOT/tools/benchmark/go.mod")$(
			case " $TARGETS " in *" kine-"*) echo ", kine $(awk '$1 == "require" && $2 == "github.com/k3s-io/kine" {print $3}' "$ROOT/tools/kine/go.mod")" ;; esac
		)$([ -n "$PGPORT" ] && echo ", PostgreSQL $(psql -h 127.0.0.1 -p "$PGPORT" -U kvsql -d postgres -Atqc 'show server_version' | awk '{print $1}')")$(
			[ -n "$MYPORT" ] && echo ", MariaDB $(mariadb --no-defaults --socket="$MYDIR/mysqld.sock" -u root -Nse 'select version()')")."
	echo
	echo "Median of $ROUNDS round(s); the last column is each round's req/s (watch-latency: average ms)."
	echo
	echo "| workload | server | req/s | avg ms | p99 ms | errors | per round |"
	echo "|---|---|--:|--:|--:|--:|--:|"
	for w in "${WORKLOADS[@]}"; do
		case $w in watch-xinst-*) continue ;; esac
		for t in $TARGETS; do
			read -r rps avg p99 errs spread < <(summary "$w" "$t")
			if [ "$w" = watch-latency ]; then rps="-"; fi
			echo "| $(describe "$w") | $t | $rps | $avg | $p99 | $errs | $spread |"
		done
	done
	if selected watch-xinst-idle || selected watch-xinst-load || selected watch-xinst-paced; then
		echo
		echo "Cross-instance watch (bench/watchlat): put through instance A, event through a watch on instance B of the"
		echo "same database ($N_XWATCH timed puts, $N_XWATCH_KINE on kine; etcd: one member, A = B). put→event: from"
		echo "issuing the put to the event; ack→event: from the put's response to the event. Median over rounds, ms."
		echo
		echo "| workload | server | put→event p50 | p99 | max | ack→event p99 | load CAS/s | p99 per round |"
		echo "|---|---|--:|--:|--:|--:|--:|--:|"
		for w in watch-xinst-idle watch-xinst-load watch-xinst-paced; do
			selected "$w" || continue
			for t in $TARGETS; do
				read -r p50 p99 mx ack cas spread < <(wsummary "$w" "$t")
				echo "| $(describe "$w") | $t | $p50 | $p99 | $mx | $ack | $cas | $spread |"
			done
		done
	fi
	for sfx in "" -text; do
		selected "put-1$sfx" && selected "put-64$sfx" || continue
		echo
		echo "Group commit (median put-64$sfx req/s ÷ median put-1$sfx req/s):"
		for t in $TARGETS; do
			r1=$(summary "put-1$sfx" "$t" | awk '{print $1}')
			r64=$(summary "put-64$sfx" "$t" | awk '{print $1}')
			echo "- $t: $(awk -v a="$r64" -v b="$r1" 'BEGIN { if (b + 0 > 0) printf "%.1f×", a / b; else print "-" }')"
		done
	done
	# ratio W A B: median req/s of W on A ÷ on B.
	ratio() {
		local a b
		a=$(summary "$1" "$2" | awk '{print $1}')
		b=$(summary "$1" "$3" | awk '{print $1}')
		awk -v a="$a" -v b="$b" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'
	}
	for db in pg mysql; do
		case " $TARGETS " in *" kvsql-$db "*) ;; *) continue ;; esac
		echo
		echo "Ratios, kvsql-$db (req/s ÷ req/s):"
		for w in put-1 put-64 put-1-text put-64-text cas-64 range-1key-1 range-1key-64 range-1000keys-16 count-10000keys-16 range-1000keys-16-hist; do
			selected "$w" || continue
			line=
			case " $TARGETS " in *" kine-$db "*) line="÷ kine-$db $(ratio "$w" "kvsql-$db" "kine-$db")" ;; esac
			case " $TARGETS " in *" etcd "*) line="$line${line:+, }÷ etcd $(ratio "$w" "kvsql-$db" etcd)" ;; esac
			echo "- $w: $line"
		done
	done
	echo
	echo "Raw output: $RUN"
} | tee "$RUN/results.md"
