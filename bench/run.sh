#!/usr/bin/env bash
# bench/run.sh: kvsql on SQLite against etcd 3.6, measured in one run with
# etcd's own benchmark tool (go.etcd.io/etcd/v3/tools/benchmark).
#
# Builds kvsql (pure-Go SQLite driver, the default), kvsql -tags sqlite_cgo
# (mattn/go-sqlite3), etcd 3.6, etcdctl 3.6 and the benchmark tool into
# .cache/bench/bin, starts every server on a fresh data directory and free
# 127.0.0.1 ports with its default durability (etcd fsyncs its WAL, kvsql
# SQLite runs synchronous=FULL), runs each workload on each server in turn,
# prints a markdown table and stops the servers. docs/benchmarks.md explains
# the workloads and records a run.
#
# Environment:
#   BENCH_TARGETS   servers to measure (default "etcd kvsql kvsql-cgo";
#                   kvsql-cgo is skipped when there is no C compiler)
#   BENCH_WORKLOADS workloads to run (default all: put-1 put-64 range-1key-1
#                   range-1key-64 range-1000keys-16 watch-latency)
#   BENCH_ROUNDS    rounds of every workload (default 5); the table shows
#                   the median of each column and the per-round spread
#   BENCH_QUICK=1   a tenth of the requests and one round, to check the
#                   script itself
#   BENCH_CACHE     build and results directory (default <repo>/.cache/bench)
#   TMPDIR          where the data directories go; must be a real disk, not
#                   tmpfs, or fsync costs nothing
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BENCH_CACHE:-$ROOT/.cache/bench}
BIN=$CACHE/bin
TARGETS=${BENCH_TARGETS:-etcd kvsql kvsql-cgo}
QUICK=${BENCH_QUICK:-0}
ROUNDS=${BENCH_ROUNDS:-5}
[ "$QUICK" = 1 ] && ROUNDS=${BENCH_ROUNDS:-1}
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

# ---- servers ----------------------------------------------------------------

RUN=$CACHE/run-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RUN"
DATA=$(mktemp -d "${TMPDIR:-/tmp}/kvsql-bench.XXXXXX")
declare -A PID PORT
used_ports=" "
LOADPID=

cleanup() {
	local t
	if [ -n "$LOADPID" ]; then kill "$LOADPID" 2>/dev/null || true; fi
	for t in "${!PID[@]}"; do
		kill "${PID[$t]}" 2>/dev/null || true
	done
	for t in "${!PID[@]}"; do
		wait "${PID[$t]}" 2>/dev/null || true
	done
	rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port VAR: set VAR to a 127.0.0.1 port nothing listens on and this
# script has not handed out yet (bounded number of tries). Not called in a
# $(...) subshell, so that used_ports and RANDOM advance.
free_port() {
	local -n port_=$1
	local try_ cand_
	for try_ in $(seq 1 200); do
		cand_=$((20000 + RANDOM % 40000))
		case "$used_ports" in *" $cand_ "*) continue ;; esac
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$cand_") 2>/dev/null; then
			used_ports="$used_ports$cand_ "
			port_=$cand_
			return 0
		fi
	done
	die "no free port found"
}

ctl() { "$BIN/etcdctl" --endpoints "127.0.0.1:${PORT[$1]}" --dial-timeout 2s --command-timeout 30s "${@:2}"; }

start() {
	local t=$1 p pp
	free_port p
	PORT[$t]=$p
	case $t in
	etcd)
		free_port pp
		"$BIN/etcd" --name bench --data-dir "$DATA/etcd" \
			--listen-client-urls "http://127.0.0.1:$p" --advertise-client-urls "http://127.0.0.1:$p" \
			--listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
			--initial-cluster "bench=http://127.0.0.1:$pp" --log-level warn >"$RUN/$t.log" 2>&1 &
		;;
	kvsql | kvsql-cgo)
		"$BIN/$t" --listen-client-urls "http://127.0.0.1:$p" --data-dir "$DATA/$t" \
			--log-level warn >"$RUN/$t.log" 2>&1 &
		;;
	*) die "unknown target $t" ;;
	esac
	PID[$t]=$!
	local i
	for i in $(seq 1 60); do
		if ctl "$t" put /bench/ready 1 >/dev/null 2>&1; then
			log "$t listening on 127.0.0.1:$p (pid ${PID[$t]})"
			return 0
		fi
		kill -0 "${PID[$t]}" 2>/dev/null || die "$t exited; see $RUN/$t.log"
		sleep 0.5
	done
	die "$t did not answer within 30s; see $RUN/$t.log"
}

for t in $TARGETS; do start "$t"; done
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# The machine's 1-minute load every 10 s (for at most 30 min): numbers from a
# shared machine are only as good as what else ran, so the report says.
for _ in $(seq 1 180); do cut -d' ' -f1 /proc/loadavg; sleep 10; done >"$RUN/load.txt" 2>/dev/null &
LOADPID=$!

# ---- workloads --------------------------------------------------------------

# bench NAME TARGET ARGS...: one benchmark invocation in round $round,
# output kept in $RUN/NAME.TARGET.ROUND.out.
bench() {
	local name=$1 t=$2 out
	shift 2
	out=$RUN/$name.$t.$round
	log "round $round/$ROUNDS: $name on $t"
	if ! timeout "$STEP_TIMEOUT" "$BIN/benchmark" --precise --endpoints "127.0.0.1:${PORT[$t]}" "$@" \
		>"$out.out" 2>"$out.err"; then
		echo "FAILED or timed out after ${STEP_TIMEOUT}s" >>"$out.out"
	fi
}

# load TARGET: the keys the range workloads read. 1000 keys under
# /bench/range/ and one /bench/single, 256-byte values, 100 puts per txn.
load() {
	local t=$1 i j v
	v=$(head -c 192 /dev/urandom | base64 -w0)
	ctl "$t" put /bench/single "$v" >/dev/null
	for i in $(seq 0 9); do
		{
			echo
			for j in $(seq 0 99); do printf 'put /bench/range/%04d "%s"\n' $((i * 100 + j)) "$v"; done
			echo
			echo
		} | ctl "$t" txn >/dev/null
	done
	[ "$(ctl "$t" get --prefix --count-only --write-out=fields /bench/range/ | awk '/"Count"/{print $3}')" = 1000 ] ||
		die "$t: loading /bench/range/ did not leave 1000 keys"
}

# Request counts (BENCH_QUICK=1 divides them by ten).
N_PUT1=$(n 2000)
N_PUT64=$(n 20000)
N_GET1=$(n 5000)
N_GET64=$(n 20000)
N_GET1000=$(n 1000)
N_WATCH=$(n 500)

# Random 8-byte binary keys out of 100000 (the tool's default key space is a
# single key), random binary 256-byte values, as the tool sends them.
PUT=(put --key-size 8 --val-size 256 --sequential-keys=false --key-space-size 100000)
read -r -a WORKLOADS <<<"${BENCH_WORKLOADS:-put-1 put-64 range-1key-1 range-1key-64 range-1000keys-16 watch-latency}"

# selected NAME: whether workload NAME is to run.
selected() { case " ${WORKLOADS[*]} " in *" $1 "*) return 0 ;; esac; return 1; }

# workload NAME TARGET: run workload NAME once on TARGET.
workload() {
	case $1 in
	put-1) bench "$1" "$2" "${PUT[@]}" --clients 1 --conns 1 --total "$N_PUT1" ;;
	put-64) bench "$1" "$2" "${PUT[@]}" --clients 64 --conns 64 --total "$N_PUT64" ;;
	range-1key-1) bench "$1" "$2" range /bench/single --consistency l --clients 1 --conns 1 --total "$N_GET1" ;;
	range-1key-64) bench "$1" "$2" range /bench/single --consistency l --clients 64 --conns 64 --total "$N_GET64" ;;
	range-1000keys-16)
		bench "$1" "$2" range /bench/range/ /bench/range0 --consistency l --clients 16 --conns 16 --total "$N_GET1000" ;;
	# 100 watchers (10 streams × 10) on one key; put-to-event latency at 100 puts/s.
	watch-latency)
		bench "$1" "$2" watch-latency --put-total "$N_WATCH" --put-rate 100 --streams 10 --watchers-per-stream 10 ;;
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

# Every workload runs on every server in turn, in short steps and in a
# rotating order, so that a burst of load from elsewhere on the machine hits
# all of them alike; the report takes the median over the rounds.
for t in $TARGETS; do load "$t"; done
for round in $(seq 1 "$ROUNDS"); do
	ORDER=$(rotate $((round - 1)) $TARGETS)
	for w in "${WORKLOADS[@]}"; do
		for t in $ORDER; do workload "$w" "$t"; done
	done
done

# ---- report -----------------------------------------------------------------

# stats FILE: "req/s avg_ms p99_ms errors" from the last summary in FILE
# (for watch-latency: the watch events summary, i.e. put-to-event latency).
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
	/FAILED/              { failed = 1 }
	END { if (failed) { print "FAILED - - -" } else { print rps, avg, p99, errs } }
	' "$1"
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
		printf "%.0f %.2f %.2f %d %s\n", med(rps, n), med(avg, n), med(p99, n), errs, spread
	}'
}

describe() {
	case $1 in
	put-1) echo "put, 1 client, $N_PUT1 × (8 B key, 256 B value)" ;;
	put-64) echo "put, 64 clients, $N_PUT64 × (8 B key, 256 B value)" ;;
	range-1key-1) echo "range 1 key, linearizable, 1 client, $N_GET1 ×" ;;
	range-1key-64) echo "range 1 key, linearizable, 64 clients, $N_GET64 ×" ;;
	range-1000keys-16) echo "range 1000 keys (256 KB), linearizable, 16 clients, $N_GET1000 ×" ;;
	watch-latency) echo "watch latency put → event, 100 watchers, $N_WATCH puts at 100/s" ;;
	esac
}

{
	echo "kvsql vs etcd 3.6 — $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs;" \
		"load average (1/5/15 min) $LOAD_BEFORE before the run, $(cut -d' ' -f1-3 /proc/loadavg) after;" \
		"1-min load during the run $(sort -n "$RUN/load.txt" | sed -n '1p;$p' | paste -sd- -) (min-max, this benchmark included)"
	echo
	echo "kvsql $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '(no git)'), $(go version | cut -d' ' -f3);" \
		"etcd $(awk 'NF >= 2 && $(NF - 1) == "go.etcd.io/etcd/server/v3" {print $NF}' "$ROOT/tools/etcd/go.mod")," \
		"benchmark $(awk 'NF >= 2 && $(NF - 1) == "go.etcd.io/etcd/v3" {print $NF}' "$ROOT/tools/benchmark/go.mod")."
	echo
	echo "Median of $ROUNDS round(s); the last column is each round's req/s (watch: average ms)."
	echo
	echo "| workload | server | req/s | avg ms | p99 ms | errors | per round |"
	echo "|---|---|--:|--:|--:|--:|--:|"
	for w in "${WORKLOADS[@]}"; do
		for t in $TARGETS; do
			read -r rps avg p99 errs spread < <(summary "$w" "$t")
			if [ "$w" = watch-latency ]; then rps="-"; fi
			echo "| $(describe "$w") | $t | $rps | $avg | $p99 | $errs | $spread |"
		done
	done
	if selected put-1 && selected put-64; then
		echo
		echo "Group commit (median put-64 req/s ÷ median put-1 req/s):"
		for t in $TARGETS; do
			r1=$(summary put-1 "$t" | awk '{print $1}')
			r64=$(summary put-64 "$t" | awk '{print $1}')
			echo "- $t: $(awk -v a="$r64" -v b="$r1" 'BEGIN { if (b + 0 > 0) printf "%.1f×", a / b; else print "-" }')"
		done
	fi
	echo
	echo "Raw benchmark output: $RUN"
} | tee "$RUN/results.md"
