#!/usr/bin/env python3
"""Where a graph replay's time goes when its kernels overlap: reads the CSV of
the CUPTI tracer (timeline.cpp) and, over the last replays of the most
frequent graph, charges each kernel its *marginal* time: how far its end lies
past the latest end of the kernels that started before it. The marginal
times of a replay add up to its span, so, unlike kernels timed alone, they
show what each kernel costs inside the overlapped step.

    python3 bench/cuda/timeline.py trace.csv [replays=20] [first=12]

Prints the span, the marginal time per kernel kind (median over replays),
then the first `first` kernels of the last replay in order: start relative
to the previous kernel's end (negative: it was already running), duration,
marginal time.
"""
import csv
import statistics
import sys
from collections import Counter, defaultdict

from breakdown import short


def replays(path):
    """{correlation id: [(start, end, kind)]} for the kernels of graph launches."""
    launches = defaultdict(list)
    graph_of = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            if r["graph"] == "0":
                continue
            kind = f"{short(r['name'])} [{r['grid_x']},{r['grid_y']}]"
            launches[int(r["correlation"])].append((int(r["start_ns"]), int(r["end_ns"]), kind))
            graph_of[int(r["correlation"])] = r["graph"]
    # The graph replayed most often is the one being measured.
    graph, _ = Counter(graph_of.values()).most_common(1)[0]
    return {c: sorted(k) for c, k in launches.items() if graph_of[c] == graph}


def marginal(kernels):
    """[(kind, start - previous end, duration, marginal)] in start order, all in us."""
    out, latest = [], None
    for start, end, kind in kernels:
        gap = 0.0 if latest is None else (start - latest) / 1e3
        added = (end - start) / 1e3 if latest is None else max(0, end - latest) / 1e3
        out.append((kind, gap, (end - start) / 1e3, added))
        latest = end if latest is None else max(latest, end)
    return out


def main(path, count=20, first=12):
    runs = replays(path)
    if not runs:
        print(f"timeline: no graph launches in {path}")
        return
    ids = sorted(runs)[-count:]
    spans, per_kind = [], defaultdict(list)
    for c in ids:
        ks = runs[c]
        spans.append((max(e for _, e, _ in ks) - ks[0][0]) / 1e3)
        sums, counts = defaultdict(float), Counter()
        for kind, _, _, added in marginal(ks):
            sums[kind] += added
            counts[kind] += 1
        for kind in sums:
            per_kind[kind].append((sums[kind], counts[kind]))
    span = statistics.median(spans)
    print(f"{len(ids)} replays of {len(runs[ids[-1]])} kernels, span median {span:.1f} us "
          f"(min {min(spans):.1f}, max {max(spans):.1f})")
    print(f"{'marginal us':>11} {'share':>6} {'count':>5} {'per launch':>10}  kernel [grid]")
    rows = sorted(((statistics.median(s for s, _ in v), v[0][1], k) for k, v in per_kind.items()), reverse=True)
    for us, n, kind in rows:
        print(f"{us:11.1f} {us / span:6.1%} {n:5d} {us / n:10.2f}  {kind}")
    print(f"first {first} kernels of the last replay: start - previous end, duration, marginal (us)")
    for kind, gap, dur, added in marginal(runs[ids[-1]])[:first]:
        print(f"  {gap:8.2f} {dur:8.2f} {added:8.2f}  {kind}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:4]))
