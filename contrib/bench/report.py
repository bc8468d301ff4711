#!/usr/bin/env python3
"""Summarises a results directory written by contrib/bench/run.sh.

    report.py RESULTS_DIR [--markdown]

Reads the fio JSON (seq-*, rand-*), the tree-walk JSON (tree-*), the copies
of overcache's control file taken around each overcache run (stats-*) and
the daemon's memory (rss-*), and prints one table (median and spread of the
repeats for every workload and target) and the ratios the goals of issue #3
name. Ratios are taken per repeat between runs of the same repeat (which ran
moments apart) and then summarised, so that a noisy neighbour slowing one
repeat moves both sides of a ratio.
"""
import glob
import json
import os
import re
import statistics
import sys

TARGETS = ["hdd", "fast", "pt", "oc-first", "oc-hit", "pt-pc", "oc-hit-pc"]
TARGET_NAMES = {
    "hdd": "HDD directly",
    "fast": "fast dir directly",
    "pt": "passthrough_ll (fast)",
    "oc-first": "overcache, first read",
    "oc-hit": "overcache, second read",
    "pt-pc": "passthrough_ll, echo 1",
    "oc-hit-pc": "overcache 2nd read, echo 1",
}
WORKLOADS = ["seq", "rand", "tree"]
WORKLOAD_NAMES = {
    "seq": "sequential 1 MiB reads",
    "rand": "random 4 KiB reads, 4 jobs",
    "tree": "small-file tree",
}


def load(path):
    with open(path) as f:
        text = f.read()
    # fio may print notes before its JSON.
    return json.loads(text[text.index("{"):])


def metrics(workload, data):
    """(primary value, unit, seconds) of one run."""
    if workload == "tree":
        secs = data["seconds"]
        return data["files"] / secs, "files/s", secs
    job = data["jobs"][0]["read"]
    if workload == "seq":
        return job["bw_bytes"] / 2**20, "MiB/s", job["runtime"] / 1000.0
    return job["iops"], "IOPS", job["runtime"] / 1000.0


def collect(d):
    runs = {}  # (workload, target) -> {repeat: (value, unit, secs, extra)}
    for path in glob.glob(os.path.join(d, "*-r*.json")):
        m = re.match(r"(seq|rand|tree)-(.+)-r(\d+)\.json$", os.path.basename(path))
        if not m:
            continue
        w, t, r = m.group(1), m.group(2), int(m.group(3))
        try:
            data = load(path)
        except (ValueError, KeyError, OSError) as e:
            print(f"warning: cannot read {path}: {e}", file=sys.stderr)
            continue
        value, unit, secs = metrics(w, data)
        extra = {}
        if w == "rand":
            lat = data["jobs"][0]["read"].get("clat_ns", {}).get("mean")
            if lat is not None:
                extra["mean_lat_ms"] = lat / 1e6
        runs.setdefault((w, t), {})[r] = (value, unit, secs, extra)
    return runs


def read_stats(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2:
                    try:
                        out[parts[0]] = float(parts[1])
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def stats_delta(d, w, ph):
    """Summed counter deltas of the overcache runs of one workload and phase."""
    total = {}
    for before in glob.glob(os.path.join(d, f"stats-{w}-{ph}-r*-before.txt")):
        after = before.replace("-before.txt", "-after.txt")
        a, b = read_stats(before), read_stats(after)
        for k, v in b.items():
            if k in a and k.startswith("cache_") and not k.endswith("_ratio"):
                total[k] = total.get(k, 0) + v - a[k]
    return total


def fmt(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def summary(values):
    med = statistics.median(values)
    return med, min(values), max(values)


def spread_text(values):
    med, lo, hi = summary(values)
    if len(values) == 1:
        return fmt(med), "-"
    pct = (hi - lo) / med * 100 if med else 0
    return fmt(med), f"{fmt(lo)}-{fmt(hi)} (±{pct / 2:.0f}%)"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    markdown = "--markdown" in sys.argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    d = args[0]
    meta = {}
    if os.path.exists(os.path.join(d, "meta.json")):
        meta = load(os.path.join(d, "meta.json"))
    runs = collect(d)
    if not runs:
        print(f"no results in {d}", file=sys.stderr)
        return 1

    lines = []
    if markdown:
        lines.append("| workload | target | median | unit | min-max (spread) | seconds (median) |")
        lines.append("|---|---|---:|---|---|---:|")
    else:
        lines.append(f"{'workload':<28} {'target':<24} {'median':>10} {'unit':<8} "
                     f"{'min-max (spread)':<26} {'secs':>7}")
    for w in WORKLOADS:
        for t in TARGETS:
            rs = runs.get((w, t))
            if not rs:
                continue
            vals = [v[0] for v in rs.values()]
            secs = statistics.median([v[2] for v in rs.values()])
            unit = next(iter(rs.values()))[1]
            med, spread = spread_text(vals)
            if markdown:
                lines.append(f"| {WORKLOAD_NAMES[w]} | {TARGET_NAMES[t]} | {med} | {unit} | "
                             f"{spread} | {secs:.2f} |")
            else:
                lines.append(f"{WORKLOAD_NAMES[w]:<28} {TARGET_NAMES[t]:<24} {med:>10} "
                             f"{unit:<8} {spread:<26} {secs:>7.2f}")
    print("\n".join(lines))

    def ratio(w, num, den, use_secs=False):
        a, b = runs.get((w, num), {}), runs.get((w, den), {})
        common = sorted(set(a) & set(b))
        if not common:
            return None
        idx = 2 if use_secs else 0
        return [a[r][idx] / b[r][idx] for r in common if b[r][idx]]

    goals = [
        ("sequential: second read vs passthrough (throughput)", "seq", "oc-hit", "pt", False, ">=", 0.90),
        ("random 4K: second read vs passthrough (IOPS)", "rand", "oc-hit", "pt", False, ">=", 0.80),
        ("small-file tree: second read vs passthrough (files/s)", "tree", "oc-hit", "pt", False, ">=", 0.80),
        ("sequential: first read time vs HDD directly", "seq", "oc-first", "hdd", True, "<=", 1.10),
        ("small-file tree: first read time vs HDD directly", "tree", "oc-first", "hdd", True, "<=", 1.10),
        ("random 4K: first read vs HDD directly (IOPS, no goal)", "rand", "oc-first", "hdd", False, None, None),
        ("small-file tree, echo 1: second read vs passthrough", "tree", "oc-hit-pc", "pt-pc", False, None, None),
    ]
    print()
    if markdown:
        print("| ratio | median | min-max | goal | met? |")
        print("|---|---:|---|---|---|")
    else:
        print(f"{'ratio':<56} {'median':>7} {'min-max':<13} {'goal':<7} met?")
    for name, w, num, den, use_secs, op, goal in goals:
        rs = ratio(w, num, den, use_secs)
        if not rs:
            continue
        med, lo, hi = summary(rs)
        goal_text = f"{op} {goal * 100:.0f}%" if op else "-"
        met = "-" if op is None else ("yes" if (med >= goal if op == ">=" else med <= goal) else "NO")
        mm = f"{lo * 100:.0f}-{hi * 100:.0f}%"
        if markdown:
            print(f"| {name} | {med * 100:.0f}% | {mm} | {goal_text} | {met} |")
        else:
            print(f"{name:<56} {med * 100:>6.0f}% {mm:<13} {goal_text:<7} {met}")

    # Sanity: did the "hit" runs really hit, and the first reads fill?
    print()
    for w in WORKLOADS:
        for ph in ("oc-first", "oc-hit", "oc-hit-pc"):
            s = stats_delta(d, w, ph)
            if not s:
                continue
            hits, misses = s.get("cache_hits", 0), s.get("cache_misses", 0)
            byp = s.get("cache_bypass_hits", 0) + s.get("cache_bypass_misses", 0)
            tot = hits + misses + byp
            ratio_txt = f"{hits / tot * 100:.1f}% hits" if tot else "no reads counted"
            print(f"overcache stats, {WORKLOAD_NAMES[w]}, {ph}: hits {hits:.0f}, misses "
                  f"{misses:.0f}, bypass {byp:.0f} ({ratio_txt}); hit bytes "
                  f"{s.get('cache_hit_bytes', 0) / 2**20:.0f} MiB, miss bytes "
                  f"{s.get('cache_miss_bytes', 0) / 2**20:.0f} MiB, read errors "
                  f"{s.get('cache_read_errors', 0):.0f}")

    # The daemon's storage reads (/proc/PID/io read_bytes: cache device and
    # HDD together) per byte the jobs asked for.
    for w in WORKLOADS:
        for ph in ("oc-first", "oc-hit", "oc-hit-pc"):
            dev, asked = 0.0, 0.0
            for before in glob.glob(os.path.join(d, f"io-{w}-{ph}-r*-before.txt")):
                a = read_stats(before)
                b = read_stats(before.replace("-before.txt", "-after.txt"))
                a = {k.rstrip(":"): v for k, v in a.items()}
                b = {k.rstrip(":"): v for k, v in b.items()}
                if "read_bytes" in a and "read_bytes" in b:
                    dev += b["read_bytes"] - a["read_bytes"]
            s = stats_delta(d, w, ph)
            asked = s.get("cache_hit_bytes", 0) + s.get("cache_miss_bytes", 0)
            if dev and asked:
                print(f"daemon storage reads, {WORKLOAD_NAMES[w]}, {ph}: {dev / 2**20:.0f} MiB "
                      f"for {asked / 2**20:.0f} MiB asked ({dev / asked:.2f}x)")

    rss = []
    for p in sorted(glob.glob(os.path.join(d, "rss-r*.txt"))):
        with open(p) as f:
            kv = dict(line.split(":", 1) for line in f if ":" in line)
        rss.append((kv.get("VmRSS", "?").strip(), kv.get("VmHWM", "?").strip()))
    if rss:
        print("daemon memory at the end of each repeat (RSS / peak RSS): " +
              ", ".join(f"{a} / {b}" for a, b in rss))
    if meta:
        if meta.get("standin"):
            print("NOTE: --standin run: the 'overcache' rows are passthrough_ll over the HDD.")
        print(f"date {meta.get('date')}, commit {meta.get('commit')}, kernel {meta.get('kernel')}, "
              f"{meta.get('cpus')} CPUs ({meta.get('cpu')}), {meta.get('mem')} RAM, "
              f"{meta.get('fio')}, cgroup {meta.get('cgroup')}, repeats {meta.get('repeat')}")
        print(f"command: {meta.get('command')}")
        print(f"overcache options: {meta.get('overcache_options')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
