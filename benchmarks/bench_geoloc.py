"""Geolocation speed (a measurement script, not a test).

    python benchmarks/bench_geoloc.py train      # images/s: the shared training loop vs a plain PyTorch loop
    python benchmarks/bench_geoloc.py predict    # pyfunc prediction latency per image vs the bare network
    python benchmarks/bench_geoloc.py all

Options: ``--repeats N`` (default 3), ``--warmup N`` (1), ``--threads T`` (torch threads, default 1),
``--images N`` (synthetic 4-band 32 px chips, default 1024), ``--classes C`` (default 160),
``--json PATH``.

``train``: one epoch of ``geoloc_cnn`` (stage defaults) on the same chips, classes, soft targets, batch
size and jitter, both sides: ours is :func:`urbanrepml.tasks.geoloc.task.train_geolocator` (the loop
with its validation pass, metrics and hooks; 10% of the chips held out), the reference a bare
``for batch: zero_grad, forward, loss, backward, step`` over the same 90% plus a forward pass of the
validation chips. ``predict``: a logged pyfunc geolocator answering pixel arrays, batch of 1 and of 256,
vs the scripted network alone on prepared tensors.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def chips(n: int, classes: int, seed: int = 0):
    """A synthetic dataset: ``n`` 4-band 32 px chips on a grid of ``classes`` places, their lat/lon, one scene."""
    from urbanrepml.tasks.geoloc.data import Pixels

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    scene = rng.integers(0, 256, size=(4, side * 32, side * 32), dtype=np.uint8)
    rows = np.arange(n)
    windows = np.stack([(rows % side) * 32, (rows // side) * 32, np.full(n, 32), np.full(n, 32)], axis=1)
    lat = 47.0 + (rows // side) * 0.003
    lon = -99.0 + (rows % side) * 0.004
    return Pixels([scene], np.zeros(n, dtype=np.int64), windows, 32, 4, "chip"), lat, lon


def setup(n: int, n_classes: int):
    from urbanrepml.geodesy import scale_thresholds
    from urbanrepml.tasks.geoloc.classes import build_classes
    from urbanrepml.tasks.geoloc.task import GeolocConfig, GeolocData

    pixels, lat, lon = chips(n, n_classes)
    order = np.random.default_rng(1).permutation(n)
    val, train = np.sort(order[: n // 10]), np.sort(order[n // 10:])
    res = 9
    classes = build_classes(lat[train], lon[train], res)
    data = GeolocData(pixels, lat, lon, train, val, scale_thresholds(lat, lon))
    return data, classes, GeolocConfig(epochs=1, checkpoint_every=1)


def ours_train(data, classes, cfg) -> harness.Run:
    from urbanrepml.tasks.geoloc.task import train_geolocator

    start = time.perf_counter()
    train_geolocator(data, classes, cfg, progress=False)
    seconds = time.perf_counter() - start
    return harness.Run(seconds, info={"images/s": len(data.train) / seconds, "classes": classes.n})


def plain_train(data, classes, cfg) -> harness.Run:
    from urbanrepml.models.registry import get_model
    from urbanrepml.tasks.geoloc.losses import geoloc_loss, soft_targets

    torch.manual_seed(cfg.seed)
    labels = torch.from_numpy(classes.label(data.lat, data.lon))
    soft = torch.from_numpy(soft_targets(data.lat, data.lon, classes.lat, classes.lon, cfg.tau_km))
    start = time.perf_counter()
    net = get_model("geoloc_cnn", in_channels=4, n_classes=classes.n, input_px=32)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    net.train()
    order = data.train[torch.randperm(len(data.train)).numpy()]
    for s in range(0, len(order), cfg.batch_size):
        rows = order[s:s + cfg.batch_size]
        x = data.batch(rows, cfg.jitter_px)
        loss = geoloc_loss(net(x), labels[rows], soft[rows], cfg.mix_ce)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        for s in range(0, len(data.val), 256):
            net(data.batch(data.val[s:s + 256]))
    seconds = time.perf_counter() - start
    return harness.Run(seconds, info={"images/s": len(data.train) / seconds})


def bench_train(args) -> harness.Result:
    data, classes, cfg = setup(args.images, args.classes)
    print(f"train: {len(data.train)} chips (+{len(data.val)} validation), {classes.n} classes, batch {cfg.batch_size}")
    return harness.compare([harness.Side("shared loop", lambda: ours_train(data, classes, cfg)),
                            harness.Side("plain PyTorch", lambda: plain_train(data, classes, cfg))],
                           repeats=args.repeats, warmup=args.warmup)


def bench_predict(args) -> harness.Result:
    import mlflow

    from urbanrepml.models.registry import get_model
    from urbanrepml.tracking.geoloc_pyfunc import log_geoloc_model, prepare

    data, classes, _ = setup(args.images, args.classes)
    net = get_model("geoloc_cnn", in_channels=4, n_classes=classes.n, input_px=32).eval()
    tmp = Path(tempfile.mkdtemp())
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    scripted = torch.jit.trace(net, torch.zeros(2, 4, 32, 32))
    scripted.save(str(tmp / "net.pt"))
    meta = {"kind": "pixels", "input_px": 32, "bands": 4, "normalise": "chip", "cells": classes.cells,
            "lat": classes.lat.tolist(), "lon": classes.lon.tolist(), "top_k": 5, "predict": "top1"}
    with mlflow.start_run():
        info = log_geoloc_model(tmp / "net.pt", meta)
    model = mlflow.pyfunc.load_model(info.model_uri)
    arrays = data.inputs.raw(np.arange(256)).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    prepared = torch.stack([prepare(a, meta) for a in arrays])

    def side(fn, n):
        def run():
            start = time.perf_counter()
            fn(n)
            s = time.perf_counter() - start
            return harness.Run(s, info={"ms/image": 1000 * s / n})
        return run

    def pyfunc(n):
        model.predict(arrays[:n])

    def bare(n):
        with torch.no_grad():
            torch.softmax(scripted(prepared[:n]), dim=1)

    out = {}
    for n in (1, 256):
        print(f"predict: batch of {n}")
        out[n] = harness.compare([harness.Side(f"pyfunc ({n})", side(pyfunc, n)), harness.Side(f"network only ({n})", side(bare, n))],
                                 repeats=args.repeats, warmup=args.warmup)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("train", "predict", "all"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=160)
    harness.add_arguments(parser, repeats=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    if args.what in ("train", "all"):
        results["train"] = bench_train(args)
        harness.report(results["train"])
    if args.what in ("predict", "all"):
        for n, r in bench_predict(args).items():
            results[f"predict_{n}"] = r
            harness.report(r)
    harness.save(results, args.json)


if __name__ == "__main__":
    main()
