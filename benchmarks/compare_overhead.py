"""The decorator's per-invocation overhead (a handler that opens nothing) in two checkouts.

    git worktree add --detach /tmp/lc-old bd12f0e
    python3 benchmarks/compare_overhead.py /tmp/lc-old .

Each round takes one sample per checkout, each in a fresh process importing lambda_conn
from that checkout, in alternating order: drift on a shared machine hits both alike. A
sample is the median over short batches of a decorated call minus a bare call (as
``bench_core.py``'s overhead table). Prints each checkout's median and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

_SAMPLE = """
import json, statistics, sys, timeit
sys.path.insert(0, {tree!r})
import lambda_conn
assert lambda_conn.__file__.startswith({tree!r}), lambda_conn.__file__
from lambda_conn import managed_connection

def bare(event, context):
    return 1

decorated = managed_connection(bare)
event = {{}}
bare_us, decorated_us = [], []
for _ in range({batches}):
    bare_us.append(timeit.timeit(lambda: bare(event, None), number={number}) / {number} * 1e6)
    decorated_us.append(
        timeit.timeit(lambda: decorated(event, None), number={number}) / {number} * 1e6
    )
print(json.dumps(statistics.median(decorated_us) - statistics.median(bare_us)))
"""


def sample(tree: Path, batches: int, number: int) -> float:
    code = _SAMPLE.format(tree=str(tree), batches=batches, number=number)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    ).stdout
    return float(json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before", type=Path, help="checkout to compare against")
    parser.add_argument("after", type=Path, help="checkout under test")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batches", type=int, default=7, help="batches per sample")
    parser.add_argument("--number", type=int, default=20000, help="calls per batch")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    samples: dict[str, list[float]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for name in order:
            samples[name].append(sample(trees[name], args.batches, args.number))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print("| checkout | overhead per call, median (us) | samples |")
    print("| --- | ---: | ---: |")
    for name, tree in trees.items():
        print(f"| {name}: {tree} | {medians[name]:.2f} | {len(samples[name])} |")
    print(f"\nafter / before: {medians['after'] / medians['before']:.2f}x")


if __name__ == "__main__":
    main()
