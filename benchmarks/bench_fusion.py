"""Fusion U-Net speed and memory, side by side (a measurement script, not a test).

Every configuration runs in a fresh subprocess so its peak resident memory
(``resource.getrusage(...).ru_maxrss``; tracemalloc does not see torch's
allocations) is its own. Areas are built with :func:`urbanrepml.areas.build_area`
from bounding-box study-area TOMLs written to a scratch folder; inputs are
synthetic 64-d features (seeded).

    python benchmarks/bench_fusion.py reference     # (a) reference vs ours at the reference configuration, 118K res-9 cells
                                                    #     (shared harness: warm-up, alternated rounds, medians, ratios)
    python benchmarks/bench_fusion.py fullbox       # (b) default full_unet on the full box (~470K res-9 cells)
    python benchmarks/bench_fusion.py cones         # (c) cone_unet peak memory as the area grows 16x
    python benchmarks/bench_fusion.py all

Options: ``--epochs N`` (default 2; the first epoch is reported separately as warm-up
when N > 1), ``--workdir DIR`` (scratch, default /tmp/urbanrepml-bench), ``--device``;
for (a) also the harness options ``--repeats``, ``--warmup``, ``--json`` and ``--scale``
(fraction of the reference box's side lengths, default 1).

(a) runs three sides through ``benchmarks/harness.py``, each in a fresh subprocess per
run (so its peak RSS is its own), in alternated rounds after warm-up runs: ``ours``
(the reconstruction objective, as the reference trains), ``ours, masked`` (the masked
prediction objective ``fuse`` trains: masks drawn per step, visibility flags appended,
hidden entries predicted by the MLP decoder) and ``reference``. A run's seconds are its
seconds per epoch (the first epoch left out); the report gives medians, spreads and the
per-round ratios against the reference.

(a) "reference" is a faithful re-implementation of the public reference
configuration (bert-berkers/UrbanRepML ``urban_embedding/model.py``: PyG ``GCNConv``
with edge weights, ``add_self_loops=False``, each followed by LayerNorm + GELU,
a residual Linear+LayerNorm+GELU per block, L2 normalisation after every block
and mapping, sparse-matrix resolution mappings followed by a learnable
Linear+GELU, per-resolution output heads, a reconstruction MLP and MSE losses on
L2-normalised vectors), at res 9/8/7, widths 64/128/256, 10 GCN layers per
block, full batch, float32, AdamW with gradient clipping.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]  # harness, this checkout

import harness  # noqa: E402

NL_BOX = (4.0, 51.3, 6.9, 53.2)


def _write_toml(workdir: Path, name: str, box: tuple[float, float, float, float]) -> Path:
    path = workdir / f"{name}.toml"
    path.write_text(f'name = "{name}"\nboundary = [{box[0]}, {box[1]}, {box[2]}, {box[3]}]\n')
    return path


def quarter_box() -> tuple[float, float, float, float]:
    """South-west quarter of the NL box (half the width, half the height)."""
    x0, y0, x1, y1 = NL_BOX
    return (x0, y0, (x0 + x1) / 2, (y0 + y1) / 2)


def sub_box(fraction: float) -> tuple[float, float, float, float]:
    """A box in the south-west corner of the NL box with ``fraction`` of its side lengths."""
    x0, y0, x1, y1 = NL_BOX
    return (x0, y0, x0 + (x1 - x0) * fraction, y0 + (y1 - y0) * fraction)


# ----------------------------------------------------------------------------- reference model
def _reference_model(in_dim: int, dims, convs: int, out_dim: int = 32):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch_geometric.nn import GCNConv

    def l2(x):
        return F.normalize(x, p=2, dim=-1, eps=1e-8)

    class Block(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.convs = nn.ModuleList(GCNConv(dim, dim, add_self_loops=False) for _ in range(convs))
            self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(convs))
            self.residual = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim), nn.GELU())

        def forward(self, x, edge_index, edge_weight, skip=None):
            if skip is not None:
                x = x + skip
            identity = self.residual(x)
            for conv, norm in zip(self.convs, self.norms, strict=False):
                x = F.gelu(norm(conv(x, edge_index, edge_weight)))
            return l2(x + identity)

    class Mapping(nn.Module):
        def __init__(self, d_in, d_out):
            super().__init__()
            self.transform = nn.Sequential(nn.Linear(d_in, d_out), nn.GELU())

        def forward(self, x, mapping):
            return l2(self.transform(torch.sparse.mm(mapping, x)))

    class ReferenceUNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fusion = nn.Sequential(nn.Linear(in_dim, dims[0]), nn.LayerNorm(dims[0]), nn.GELU())
            self.enc = nn.ModuleList(Block(d) for d in dims)
            self.dec = nn.ModuleList(Block(d) for d in dims)
            self.map_down = nn.ModuleList(Mapping(dims[i], dims[i + 1]) for i in range(len(dims) - 1))
            self.map_up = nn.ModuleList(Mapping(dims[i + 1], dims[i]) for i in range(len(dims) - 1))
            self.out = nn.ModuleList(nn.Sequential(nn.Linear(d, out_dim), nn.LayerNorm(out_dim)) for d in dims)
            self.recon = nn.Sequential(nn.Linear(out_dim, dims[0]), nn.LayerNorm(dims[0]), nn.GELU(),
                                       nn.Linear(dims[0], in_dim), nn.LayerNorm(in_dim))

        def forward(self, x, edges, weights, down, up):
            x = l2(self.fusion(x))
            skips = []
            h = x
            for i in range(len(dims)):
                h = self.enc[i](h, edges[i], weights[i])
                skips.append(h)
                if i < len(dims) - 1:
                    h = self.map_down[i](h, down[i])
            d = self.dec[-1](h, edges[-1], weights[-1], skips[-1])
            decoded = [d]
            for i in range(len(dims) - 2, -1, -1):
                d = self.map_up[i](d, up[i])
                d = self.dec[i](d, edges[i], weights[i], skips[i])
                decoded.append(d)
            decoded.reverse()
            emb = [l2(head(z)) for head, z in zip(self.out, decoded, strict=False)]
            return emb, l2(self.recon(emb[0]))

    def loss_fn(emb, recon, x, down):
        rec = F.mse_loss(l2(recon), l2(x))
        cons = sum(F.mse_loss(l2(torch.sparse.mm(down[i], emb[i])), l2(emb[i + 1])) for i in range(len(emb) - 1))
        return rec + cons / (len(emb) - 1)

    return ReferenceUNet(), loss_fn


def _run_reference(levels, x, epochs: int, device) -> list[float]:
    import torch

    edges = [torch.from_numpy(e).to(device) for e in levels.edges]
    weights = [torch.ones(e.shape[1], device=device) for e in edges]
    down, up = [], []
    for level in range(1, len(levels.cells)):
        parent = torch.from_numpy(levels.parents[level])
        n_child, n_parent = len(parent), len(levels.cells[level])
        counts = torch.bincount(parent, minlength=n_parent).float()
        idx = torch.stack([parent, torch.arange(n_child)])
        down.append(torch.sparse_coo_tensor(idx, 1.0 / counts[parent], (n_parent, n_child)).coalesce().to(device))
        up.append(torch.sparse_coo_tensor(idx.flip(0), torch.ones(n_child), (n_child, n_parent)).coalesce().to(device))
    if os.environ.get("BENCH_MALLOPT_REFERENCE"):
        from urbanrepml.training.memory import limit_heap_fragmentation

        limit_heap_fragmentation()
    model, loss_fn = _reference_model(x.shape[1], (64, 128, 256), 10)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    def step_loss():
        emb, recon = model(x, edges, weights, down, up)
        return loss_fn(emb, recon, x, down)

    return _timed_epochs(epochs, model, opt, step_loss, device)


def _run_ours(levels, x, epochs: int, device, dims, convs) -> list[float]:
    import torch

    from urbanrepml.models.unet import FullAreaUNet, unet_losses
    from urbanrepml.training.memory import limit_heap_fragmentation

    if os.environ.get("URBANREPML_LOW_MEMORY"):
        limit_heap_fragmentation()  # as urbanrepml.training.loop.Trainer does with this variable
    hier = levels.hierarchy().to(device)
    model = FullAreaUNet(x.shape[1], dims, convs, dropout=0.0).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    return _timed_epochs(epochs, model, opt, lambda: unet_losses(model(x, hier), x, hier).total, device)


def _run_ours_masked(levels, x, epochs: int, device, dims, convs) -> list[float]:
    """Our network with the masked-prediction objective ``fuse`` trains (one member)."""
    import torch

    from urbanrepml.models.unet import FullAreaUNet, draw_hidden, masked_input, masked_losses
    from urbanrepml.training.memory import limit_heap_fragmentation

    if os.environ.get("URBANREPML_LOW_MEMORY"):
        limit_heap_fragmentation()
    hier = levels.hierarchy().to(device)
    modalities = 4  # the 64 synthetic columns as 4 modality blocks of 16
    groups = torch.arange(x.shape[1], device=device) // (x.shape[1] // modalities)
    present = torch.ones((x.shape[0], modalities), dtype=torch.bool, device=device)
    rows = torch.ones(x.shape[0], dtype=torch.bool, device=device)
    model = FullAreaUNet(x.shape[1] + modalities, dims, convs, dropout=0.0, out_dim=x.shape[1]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    def step_loss():
        hidden = draw_hidden(x.shape[0], modalities, 0.3, 0.5, device=device)
        out = model(masked_input(x, hidden, groups), hier)
        return masked_losses(out, x, hier, hidden, present, groups, rows).total

    return _timed_epochs(epochs, model, opt, step_loss, device)


def _timed_epochs(epochs: int, model, opt, step_loss, device) -> list[float]:
    """Seconds of each full-batch epoch: zero grads, ``step_loss()``, backward, clip at 1.0, step."""
    import torch

    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        step_loss().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _synthetic_rows(positions, dim: int = 64):
    """Deterministic synthetic 64-d inputs of the cells at ``positions``, made per batch (no N x 64 matrix)."""
    import numpy as np

    freq = np.linspace(0.001, 0.05, dim, dtype=np.float32)
    phase = np.linspace(0, 3.0, dim, dtype=np.float32)
    return np.sin(np.asarray(positions, dtype=np.float32)[:, None] * freq + phase)


def _cone_run(levels, max_steps, device, root_res, batch, dims, convs):
    import torch

    from urbanrepml.models.unet import FullAreaUNet, unet_losses
    from urbanrepml.tasks.fusion.cones import build_cones, iterate_batches

    if os.environ.get("URBANREPML_LOW_MEMORY"):
        from urbanrepml.training.memory import limit_heap_fragmentation

        limit_heap_fragmentation()
    cones = build_cones(levels, root_res, k=1)
    model = FullAreaUNet(64, dims, convs, dropout=0.0).to(device)
    largest = 0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    steps = 0
    for epoch in range(10 ** 6):
        if steps >= max_steps:
            break
        t = time.perf_counter()
        order = torch.randperm(cones.n_cones, generator=torch.Generator().manual_seed(epoch)).numpy()
        for b in iterate_batches(cones, order[:(max_steps - steps) * batch], batch):
            steps += 1
            hier = b.hierarchy.to(device)
            largest = max(largest, len(b.cells0))
            xb = torch.from_numpy(_synthetic_rows(b.cells0)).to(device)
            opt.zero_grad(set_to_none=True)
            out = model(xb, hier)
            loss = unet_losses(out, xb, hier).total
            loss.backward()
            opt.step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times, (cones.n_cones, largest)


def child(spec: dict) -> None:
    """Run one configuration in this process and print a JSON line."""
    import numpy as np
    import torch

    from urbanrepml.areas import build_area
    from urbanrepml.models.hierarchy import cell_levels

    torch.manual_seed(0)
    torch.set_num_threads(int(spec.get("threads") or torch.get_num_threads()))
    device = torch.device(spec.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    extra = {}
    if spec["kind"] == "cones":
        # O(batch) memory: only the finest cells (8 bytes each) and per-root ranges are held for the area
        from urbanrepml.areas import h3ops
        from urbanrepml.areas.boundary import polygon_parts_wkb, read_boundary
        from urbanrepml.config import load_study_area

        cells = h3ops.polyfill(polygon_parts_wkb(read_boundary(load_study_area(spec["toml"]).boundary)), 9)
        levels = cell_levels(cells, [9, 8, 7], with_edges=False)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        times, extra["cones"] = _cone_run(levels, spec["steps"], device, spec["root_res"], spec["batch"], spec["dims"], spec["convs"])
    else:
        area = build_area(spec["toml"], [7, 8, 9])
        levels = cell_levels(area.cells(9), [9, 8, 7])
        del area
        rng = np.random.default_rng(0)
        x = torch.from_numpy(rng.standard_normal((len(levels.cells[0]), 64), dtype=np.float32)).to(device)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        if spec["kind"] == "reference":
            times = _run_reference(levels, x, spec["epochs"], device)
        elif spec["kind"] == "masked":
            times = _run_ours_masked(levels, x, spec["epochs"], device, spec["dims"], spec["convs"])
        else:
            times = _run_ours(levels, x, spec["epochs"], device, spec["dims"], spec["convs"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {**spec, "cells_res9": len(levels.cells[0]), "epoch_s": times, "peak_rss_mb": round(peak),
              "rss_before_mb": round(rss_before), "threads": torch.get_num_threads(), **extra}
    if device.type == "cuda":
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    if spec.get("harness"):
        harness.emit(harness.Run(_steady(times), peak_rss_mb=peak, info={
            "cells_res9": result["cells_res9"], "epoch_s": [round(t, 3) for t in times],
            "rss_before_mb": result["rss_before_mb"], "threads": result["threads"],
            **({"peak_gpu_mb": result["peak_gpu_mb"]} if "peak_gpu_mb" in result else {})}))
        return
    print("RESULT " + json.dumps(result))


THREADS: int | None = None


def _spawn(spec: dict, **extra_env: str) -> dict:
    spec = {**spec, "threads": THREADS}
    env = {**os.environ, "URBANREPML_DATA_DIR": str(Path(spec["workdir"]) / "data"), **extra_env}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"configuration {spec['kind']} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def _steady(times: list[float]) -> float:
    """Seconds per epoch, leaving out the first (warm-up) epoch when there are more."""
    rest = times[1:] if len(times) > 1 else times
    return sum(rest) / len(rest)


def scaled_quarter(scale: float) -> tuple[float, float, float, float]:
    """The reference box (south-west quarter of the NL box), its sides scaled by ``scale`` from its south-west corner."""
    x0, y0, x1, y1 = quarter_box()
    return (x0, y0, x0 + (x1 - x0) * scale, y0 + (y1 - y0) * scale)


def bench_reference(workdir: Path, epochs: int, device: str | None, repeats: int = 3, warmup: int = 1,
                    scale: float = 1.0, json_path: str | None = None) -> None:
    """(a) ours, ours with the masked objective, and the reference, through the shared harness."""
    toml = _write_toml(workdir, "nl_quarter" if scale == 1 else f"nl_quarter_{round(scale * 1000)}", scaled_quarter(scale))
    base = {"workdir": str(workdir), "toml": str(toml), "epochs": max(2, epochs), "device": device, "harness": True,
            "threads": THREADS, "dims": [64, 128, 256], "convs": 10}
    env = {"URBANREPML_DATA_DIR": str(workdir / "data")}

    def side(kind: str):
        return harness.subprocess_side([sys.executable, __file__, "--child", json.dumps({**base, "kind": kind})], env=env)

    result = harness.compare([harness.Side("ours", side("ours")), harness.Side("ours, masked", side("masked")),
                              harness.Side("reference", side("reference"))], repeats=repeats, warmup=warmup)
    first = result.runs("reference")[0].info
    print(f"(a) reference configuration (res 9/8/7, dims 64/128/256, 10 GCN layers per block, full batch), "
          f"{first['cells_res9']:,} res-9 cells, {first['threads']} threads, seconds per epoch "
          f"({base['epochs']} epochs per run, the first left out)")
    harness.report(result)
    for name in ("ours", "ours, masked"):
        speed = result.ratios("reference", name)
        mem = [o.peak_rss_mb / r.peak_rss_mb for o, r in zip(result.runs(name), result.runs("reference"), strict=False)]
        print(f"  {name}: speed-up per round {[round(v, 2) for v in speed]}, peak RSS ratio per round "
              f"{[round(v, 2) for v in mem]} (goals: >= 4x, <= 0.5x)")
    harness.save(result, json_path)


def bench_fullbox(workdir: Path, epochs: int, device: str | None) -> None:
    toml = _write_toml(workdir, "nl_full", NL_BOX)
    for kind, objective in (("ours", "reconstruction"), ("masked", "masked prediction")):
        r = _spawn({"workdir": str(workdir), "toml": str(toml), "epochs": epochs, "device": device, "kind": kind,
                    "dims": [64, 128, 256], "convs": 2})
        gpu = f", peak GPU {r['peak_gpu_mb']} MB" if "peak_gpu_mb" in r else ""
        print(f"(b) full_unet (dims 64/128/256, 2 GCN layers per block), {objective}, on the full box, "
              f"{r['cells_res9']:,} res-9 cells: {_steady(r['epoch_s']):.2f} s/epoch "
              f"(epochs {[round(t, 2) for t in r['epoch_s']]}), peak RSS {r['peak_rss_mb']} MB (goal <= 8192){gpu}")


def bench_cones(workdir: Path, epochs: int, device: str | None) -> None:
    small = _write_toml(workdir, "nl_sixteenth", sub_box(0.25))
    large = _write_toml(workdir, "nl_full", NL_BOX)
    results = []
    for toml in (small, large):
        results.append(_spawn({"workdir": str(workdir), "toml": str(toml), "epochs": 1, "steps": 40, "device": device,
                               "kind": "cones", "dims": [64, 128, 256], "convs": 2, "root_res": 6, "batch": 8}))
    low = " with URBANREPML_LOW_MEMORY=1" if os.environ.get("URBANREPML_LOW_MEMORY") else ""
    print(f"(c) cone_unet (root res 6, k=1, batch 8 cones, dims 64/128/256, 2 layers per block), 40 training steps each{low}")
    for r in results:
        print(f"  {r['cells_res9']:>8,} res-9 cells, {r['cones'][0]:>5} cones (largest batch {r['cones'][1]:,} res-9 nodes): "
              f"{sum(r['epoch_s']) / 40:6.2f} s/step, "
              f"peak RSS {r['peak_rss_mb']} MB (before training {r['rss_before_mb']} MB)")
    growth = results[1]["cells_res9"] / results[0]["cells_res9"]
    ratio = results[1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    print(f"  area grows {growth:.1f}x, peak memory grows {ratio:.2f}x (goal <= 1.20)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="all", choices=["reference", "fullbox", "cones", "all"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/urbanrepml-bench")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per configuration (default: torch's)")
    parser.add_argument("--scale", type=float, default=1.0, help="(a): side-length fraction of the reference box")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    harness.add_arguments(parser, repeats=3, warmup=1)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    global THREADS
    THREADS = args.threads
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.which in ("reference", "all"):
        bench_reference(workdir, args.epochs, args.device, args.repeats, args.warmup, args.scale, args.json)
    if args.which in ("fullbox", "all"):
        bench_fullbox(workdir, args.epochs, args.device)
    if args.which in ("cones", "all"):
        bench_cones(workdir, args.epochs, args.device)


if __name__ == "__main__":
    main()
