#!/usr/bin/env python3
"""Per-hop latency of bench/watchlat's timed puts, from a hoptrace run.

Usage: analyze.py DIR   (DIR holds one <pid>.log per kvsql process, written
with KVSQL_DEBUG_TRACE_DIR=DIR, and watchlat.log, written with
WATCHLAT_TRACE=DIR/watchlat.log; see README.md)

The second table splits every write batch of every instance into its
phases; "lock held" runs from the answer to the lock request to the end of
the commit, as seen from kvsql (the database holds the lock slightly less).

Each line of every log is "pid kind revision unix_nanoseconds". For every
timed put of revision R it finds: the commit of R's batch on the writing
instance (the first commit_done at or above R, at or before the ack), and on
the watching instance (the one that sent events) the first notify, read_done
and send at or above R. All processes run on one machine, so their wall
clocks agree.
"""
import collections
import glob
import sys


def load(path):
    ev = collections.defaultdict(list)
    for line in open(path):
        _, kind, rev, t = line.split()
        ev[kind].append((int(rev), int(t)))
    return ev


def first_at_or_above(entries, rev, not_after=None):
    for r, t in entries:
        if r >= rev and (not_after is None or t <= not_after):
            return r, t
    return None


def pct(v, p):
    return v[min(len(v) - 1, int(p * len(v)))]


def main(d):
    timed = collections.defaultdict(dict)
    for line in open(d + "/watchlat.log"):
        _, kind, rev, t = line.split()
        timed[int(rev)][kind] = int(t)
    procs = {f: load(f) for f in glob.glob(d + "/[0-9]*.log")}
    watching = [f for f, ev in procs.items() if ev["send"]]
    if len(watching) != 1:
        sys.exit("want exactly one process that sent watch events, got %d" % len(watching))
    b = procs[watching[0]]
    stages = collections.defaultdict(list)
    for rev in sorted(timed):
        w = timed[rev]
        if "event" not in w:
            continue
        commits = [c for c in (first_at_or_above(ev["commit_done"], rev, w["ack"]) for ev in procs.values()) if c]
        hops = [first_at_or_above(b[k], rev) for k in ("notify", "read_done", "send")]
        if not commits or None in hops:
            continue
        commit = min(commits)[1]  # R's own batch: the lowest revision at or above R
        notify, read, send = (h[1] for h in hops)
        for name, a, z in (
            ("issue -> commit done (A)", w["issue"], commit),
            ("commit done -> ack", commit, w["ack"]),
            ("commit done -> notified (B)", commit, notify),
            ("notified -> read done (B)", notify, read),
            ("read done -> sent (B)", read, send),
            ("sent -> event at client", send, w["event"]),
            ("ack -> event", w["ack"], w["event"]),
            ("issue -> event", w["issue"], w["event"]),
        ):
            stages[name].append((z - a) / 1e6)
    print("| hop | n | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, v in stages.items():
        v.sort()
        print("| %s | %d | %.2f | %.2f | %.2f | %.2f |" % (name, len(v), pct(v, .5), pct(v, .9), pct(v, .99), v[-1]))
    # Every write batch of every instance: begin (BEGIN + lock + prefetch
    # sent) -> locked (answer back: lock wait + round trip) -> commit start
    # (the batch's txns evaluated) -> commit done (writes, revision, COMMIT
    # with its fsync). Batches that wrote nothing have no commit entries.
    print()
    print("| instance | batches | lock wait + prefetch p50 / p99 ms | evaluate p50 / p99 ms | write + commit p50 / p99 ms | lock held p50 / p99 ms |")
    print("|---|--:|--:|--:|--:|--:|")
    for f, ev in sorted(procs.items()):
        marks = sorted([(t, k) for k in ("batch_begin", "locked", "commit_start", "commit_done") for _, t in ev[k]])
        wait, evaluate, commit, held = [], [], [], []
        for i in range(len(marks) - 3):
            (t0, k0), (t1, k1), (t2, k2), (t3, k3) = marks[i:i + 4]
            if (k0, k1, k2, k3) == ("batch_begin", "locked", "commit_start", "commit_done"):
                wait.append((t1 - t0) / 1e6)
                evaluate.append((t2 - t1) / 1e6)
                commit.append((t3 - t2) / 1e6)
                held.append((t3 - t1) / 1e6)
        if not wait:
            continue
        for v in (wait, evaluate, commit, held):
            v.sort()
        print("| %s | %d | %s |" % (f.split("/")[-1], len(wait), " | ".join(
            "%.2f / %.2f" % (pct(v, .5), pct(v, .99)) for v in (wait, evaluate, commit, held))))


if __name__ == "__main__":
    main(sys.argv[1])
