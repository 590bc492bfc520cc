"""Location-encoder speed (a measurement script, not a test).

    python benchmarks/bench_locenc.py encoders    # points/s of each encoder family (and GeoCLIP's pretrained one)
    python benchmarks/bench_locenc.py rag         # RAG query latency: LocationService.retrieve vs a brute-force numpy loop
    python benchmarks/bench_locenc.py all

Options: ``--repeats N`` (default 5; the median is reported), ``--threads T`` (torch threads, default 1),
``--points N`` (encoder points, default 20000), ``--queries Q`` (RAG queries, default 1000),
``--banks 2000,100000`` (RAG bank sizes).

``rag`` times both sides on the same queries, the same bank and the same k (10), alternating
which goes first in each repeat (A/B, B/A, ...), and checks that both retrieve the same records
(the same sets, own record excluded) and the same combined vector. The reference is what one
writes without the service: for each query, cosine to every key, mask the own record,
``argpartition`` the top k, softmax-weight the values. The encoder's forward pass is timed
separately (the location embeddings are computed once and shared).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

POA = (-30.113, -29.988, -51.266, -51.132)
FAMILIES = {  # the locenc stage's defaults for each family
    "sh_siren (L=10)": ("sh_siren", {}),
    "space2vec_grid": ("space2vec_grid", {}),
    "space2vec_theory": ("space2vec_theory", {}),
    "rff (2,8,32)": ("rff", {}),
}


def points(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.column_stack([rng.uniform(POA[0], POA[1], n), rng.uniform(POA[2], POA[3], n)]))


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_encoders(args) -> None:
    from urbanrepml.models.location.inference import encode
    from urbanrepml.models.registry import get_model

    ll = points(args.points)
    lat, lon = ll[:, 0].numpy(), ll[:, 1].numpy()
    rows = []
    for label, (name, extra) in FAMILIES.items():
        torch.manual_seed(0)
        model = get_model(name, bounds=POA, **extra).eval()
        seconds = median_seconds(lambda m=model: encode(m, lat, lon, batch=4096), args.repeats)
        rows.append((label, sum(p.numel() for p in model.parameters()), args.points / seconds))
    try:
        from urbanrepml.models.location.geoclip import build_geoclip

        model = build_geoclip()
        seconds = median_seconds(lambda: encode(model, lat, lon, batch=4096), args.repeats)
        rows.append(("geoclip (pretrained)", sum(p.numel() for p in model.parameters()), args.points / seconds))
    except Exception as exc:  # noqa: BLE001 - not installed: say so and go on
        print(f"geoclip skipped: {exc}")
    print(f"\nencoder forward pass, {args.points} points, batch 4096, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'encoder':<22} {'parameters':>11} {'points/s':>12}")
    for label, n_params, rate in rows:
        print(f"{label:<22} {n_params:>11,} {rate:>12,.0f}")


def brute_force(q: np.ndarray, keys: np.ndarray, values: np.ndarray, own: np.ndarray, k: int, scale: float):
    """The reference: one query at a time, numpy only."""
    combined = np.empty((len(q), values.shape[1]), dtype=np.float32)
    indices = np.empty((len(q), k), dtype=np.int64)
    for i in range(len(q)):
        sims = keys @ q[i]
        if own[i] >= 0:
            sims[own[i]] = -np.inf
        top = np.argpartition(-sims, k)[:k]
        w = np.exp(scale * (sims[top] - sims[top].max()))
        w /= w.sum()
        combined[i] = w @ values[top]
        indices[i] = top
    return combined, indices


def bench_rag(args) -> None:
    from urbanrepml.models.location.retrieval import LocationService

    class Precomputed(torch.nn.Module):
        """Hands back the precomputed location embeddings of the queries (the encoder is timed separately)."""

        def __init__(self, emb: torch.Tensor):
            super().__init__()
            self.register_buffer("emb", emb)
            self.out_dim = int(emb.shape[1])

        def forward(self, latlon: torch.Tensor) -> torch.Tensor:
            return self.emb[: latlon.shape[0]]

    rng = np.random.default_rng(0)
    d, v, k, scale = 128, 78, 10, 1.6
    print(f"\nRAG retrieval, {args.queries} queries, k={k}, D={d}, V={v}, {args.threads} thread(s), "
          f"median of {args.repeats} (A/B alternated)")
    print(f"{'bank':>9} {'service (ms)':>13} {'numpy loop (ms)':>16} {'ratio':>7}  same result")
    for m in args.banks:
        keys = rng.normal(size=(m, d)).astype(np.float32)
        keys /= np.linalg.norm(keys, axis=1, keepdims=True)
        values = rng.normal(size=(m, v)).astype(np.float32)
        bank_ll = points(m, seed=1)
        q = rng.normal(size=(args.queries, d)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        own = np.where(rng.random(args.queries) < 0.5, rng.integers(0, m, args.queries), -1).astype(np.int64)
        query_ll = points(args.queries, seed=2)
        service = LocationService(Precomputed(torch.from_numpy(q)), torch.from_numpy(keys), torch.from_numpy(values),
                                  bank_ll, logit_scale=scale).eval()
        own_t = torch.from_numpy(own)

        def ours(service=service, query_ll=query_ll, own_t=own_t):
            with torch.no_grad():
                return service.retrieve(query_ll, k, own_t)

        def reference(q=q, keys=keys, values=values, own=own):
            return brute_force(q, keys, values, own, k, scale)

        _, c1, i1, _ = ours()
        c2, i2 = reference()
        same = all(set(a) == set(b) for a, b in zip(i1.numpy(), i2, strict=True)) and np.allclose(c1.numpy(), c2, atol=1e-4)
        a_times, b_times = [], []
        for r in range(args.repeats + 1):
            order = [(ours, a_times), (reference, b_times)]
            for fn, sink in (order if r % 2 == 0 else order[::-1]):
                start = time.perf_counter()
                fn()
                if r:  # the first round is a warm-up
                    sink.append(time.perf_counter() - start)
        a, b = statistics.median(a_times), statistics.median(b_times)
        print(f"{m:>9,} {a * 1e3:>13.1f} {b * 1e3:>16.1f} {b / a:>6.1f}x  {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("encoders", "rag", "all"), nargs="?", default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--banks", type=lambda s: [int(x) for x in s.split(",")], default=[2000, 100000])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.what in ("encoders", "all"):
        bench_encoders(args)
    if args.what in ("rag", "all"):
        bench_rag(args)


if __name__ == "__main__":
    main()
