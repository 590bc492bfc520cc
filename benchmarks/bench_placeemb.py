"""Place-embedding speed (a measurement script, not a test).

    python benchmarks/bench_placeemb.py bands      # difficulty bands: BallTree vs exhaustive distances
    python benchmarks/bench_placeemb.py recall     # recall@k + mAP: block-vectorised vs a per-query Python loop
    python benchmarks/bench_placeemb.py all

``bands``: ``--sizes 100000`` fingerprints (``--dim`` 16, identities of 10 views each, clustered
like yearly views of one place), ``--neighbours`` 70 of other identities per anchor in 7 bands.
Ours: :func:`urbanrepml.tasks.place.bands.difficulty_bands` (scikit-learn BallTree); reference:
:func:`~urbanrepml.tasks.place.bands.brute_force_neighbours` (blocked exhaustive distances and
argpartition). Both sides return the same neighbours (checked on the first rows).

``recall``: ``--queries`` 500 queries against a ``--gallery`` of 4,500 views (9 per identity),
recall@1/10/100 and mAP. Ours: :func:`~urbanrepml.tasks.place.metrics.retrieval_metrics`;
reference: :func:`~urbanrepml.tasks.place.metrics.retrieval_metrics_loop`. Same numbers checked.

Sides alternate (A, B, A, B) on :mod:`harness`; ``--repeats`` rounds (default 3), median and
per-round ratios reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

from urbanrepml.tasks.place.bands import brute_force_neighbours, difficulty_bands  # noqa: E402
from urbanrepml.tasks.place.metrics import retrieval_metrics, retrieval_metrics_loop  # noqa: E402


def clustered(n: int, dim: int, views: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // views + 1, dim))
    ident = np.repeat(np.arange(len(centres)), views)[:n]
    return (centres[ident] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32), ident.astype(str)


def bench_bands(args) -> dict:
    results = {}
    for n in args.sizes:
        x, ident = clustered(n, args.dim)
        got = {}

        def ours(x=x, ident=ident, got=got):
            got["ours"] = difficulty_bands(x, ident, 7, args.neighbours).neighbours

        def reference(x=x, ident=ident, got=got):
            got["ref"] = brute_force_neighbours(x, ident, args.neighbours)

        result = harness.compare([harness.Side(f"BallTree bands, {n:,} x {args.dim}", harness.timed(ours)),
                                  harness.Side("exhaustive distances", harness.timed(reference))],
                                 repeats=args.repeats, warmup=0)
        harness.report(result)
        rows = min(200, n)
        same = float((got["ours"][:rows] == got["ref"][:rows]).mean())
        print(f"same neighbours in the first {rows} rows: {same:.4f}")
        results[f"bands_{n}"] = result
    return results


def bench_recall(args) -> dict:
    rng = np.random.default_rng(1)
    per = 9
    g_ident = np.repeat(np.arange(args.gallery // per), per).astype(str)
    centres = rng.normal(size=(args.gallery // per, 64))
    g = centres[np.repeat(np.arange(args.gallery // per), per)] + 0.8 * rng.normal(size=(len(g_ident), 64))
    pick = rng.choice(args.gallery // per, args.queries, replace=False)
    q = centres[pick] + 0.8 * rng.normal(size=(args.queries, 64))
    q_ident = pick.astype(str)
    got = {}

    def ours():
        got["ours"] = retrieval_metrics(q, q_ident, g, g_ident)

    def reference():
        got["ref"] = retrieval_metrics_loop(q, q_ident, g, g_ident)

    result = harness.compare([harness.Side(f"vectorised, {args.queries} x {len(g):,}", harness.timed(ours)),
                              harness.Side("per-query loop", harness.timed(reference))], repeats=args.repeats, warmup=0)
    harness.report(result)
    assert all(abs(got["ours"][k] - got["ref"][k]) < 1e-6 for k in got["ref"]), (got["ours"], got["ref"])
    print("same metrics:", {k: round(v, 4) for k, v in got["ours"].items()})
    return {"recall": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("bands", "recall", "all"))
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[100000])
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--neighbours", type=int, default=70)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--gallery", type=int, default=4500)
    harness.add_arguments(parser, repeats=3, warmup=0)
    args = parser.parse_args()
    out = {}
    if args.what in ("bands", "all"):
        out.update(bench_bands(args))
    if args.what in ("recall", "all"):
        out.update(bench_recall(args))
    harness.save(out, args.json)


if __name__ == "__main__":
    main()
