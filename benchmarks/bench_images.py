"""Image datasets: chip cutting and EfficientNet-Lite0 embedding, each beside a naive one-at-a-time loop.

1. **Chips per second** cut from the NAIP scenes (``naip_north_dakota``: 10 scenes of 934 x 724 px,
   EPSG:26914, 32 px chips). Ours: :func:`urbanrepml.sources.imagery.chips.build_chips` (each scene
   read once, nodata shares of all chips from one summed-area table, all centres reprojected in one
   pyproj call). Naive: for every chip, open the scene, read the window, count its nodata pixels
   and reproject its centre alone.
2. **Images per second** through ``efficientnet_lite0`` on the first ``--images`` chips of the
   index. Ours: :func:`urbanrepml.stages.embed_images.compute_features` (scenes read once, a decode
   thread pool, batches of ``--batch``). Naive: decode one chip (open the scene, read the window),
   prepare it, run the encoder on a batch of one.

Each pair runs ``--repeats`` times alternating ours, naive, ours, naive; the table shows the
medians and the ratio. Numbers depend on the machine and its load: run it on an idle one.

    python benchmarks/bench_images.py                      # both, 3 repeats
    python benchmarks/bench_images.py --only chips --repeats 5
    python benchmarks/bench_images.py --images 64 --input_size 224 --batch 32
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def cut_ours(folder: Path, chip_px: int) -> int:
    from urbanrepml.sources.imagery.chips import build_chips

    return len(build_chips(folder, chip_px=chip_px).frame)


def cut_naive(folder: Path, chip_px: int) -> int:
    """The same chips (ids, windows, lat/lon, nodata filter), one chip at a time."""
    import rasterio
    from pyproj import Transformer
    from rasterio.windows import Window

    rows = []
    for scene in sorted(folder.glob("*.tif")):
        with rasterio.open(scene) as src:
            width, height, transform, crs = src.width, src.height, src.transform, src.crs
        for r in range(0, height - chip_px + 1, chip_px):
            for c in range(0, width - chip_px + 1, chip_px):
                with rasterio.open(scene) as src:
                    data = src.read(window=Window(c, r, chip_px, chip_px), masked=True)
                if np.ma.getmaskarray(data).all(axis=0).mean() > 0:
                    continue
                x, y = transform * (c + chip_px / 2, r + chip_px / 2)
                lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
                rows.append((f"{scene.stem}_r{r}_c{c}", lat, lon))
    return len(rows)


def embed_ours(index, encoder, batch: int, workers: int) -> int:
    from urbanrepml.stages.embed_images import compute_features

    return len(compute_features(index, encoder, batch_size=batch, workers=workers, progress=False))


def embed_naive(index, encoder) -> int:
    import rasterio
    import torch
    from rasterio.windows import Window

    from urbanrepml.models.encoders.preprocess import prepare

    out = []
    for path, window in zip(index.image_paths(), index.windows(), strict=False):
        with rasterio.open(path) as src:
            pixels = src.read(window=Window(*window)).transpose(1, 2, 0)
        with torch.inference_mode():
            pooled, _ = encoder(prepare(pixels, encoder.input_size, encoder.mean, encoder.std)[None])
        out.append(pooled[0].numpy())
    return len(out)


def alternate(ours, naive, repeats: int) -> tuple[list[float], list[float], int, int]:
    """Seconds of each run, alternating ours, naive, ours, naive; and the item counts they returned."""
    t_ours, t_naive, n_ours, n_naive = [], [], 0, 0
    for _ in range(repeats):
        start = time.perf_counter()
        n_ours = ours()
        t_ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        n_naive = naive()
        t_naive.append(time.perf_counter() - start)
    return t_ours, t_naive, n_ours, n_naive


def row(what: str, unit: str, t_ours: list[float], t_naive: list[float], n_ours: int, n_naive: int) -> str:
    a, b = n_ours / statistics.median(t_ours), n_naive / statistics.median(t_naive)
    return (f"| {what} | {n_ours:,} | {a:,.1f} {unit}/s ({statistics.median(t_ours):.2f} s) | "
            f"{b:,.1f} {unit}/s ({statistics.median(t_naive):.2f} s) | {a / b:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("chips", "embed"), default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chip_px", type=int, default=32)
    parser.add_argument("--images", type=int, default=128, help="chips embedded per run")
    parser.add_argument("--input_size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    import torch

    from urbanrepml.datasets import fetch

    folder = fetch("naip_north_dakota")
    print(f"torch threads {torch.get_num_threads()}, repeats {args.repeats} (alternated), medians")
    print("| what | items | ours | naive loop | ratio |")
    print("|---|---|---|---|---|")
    if args.only in (None, "chips"):
        t_a, t_b, n_a, n_b = alternate(lambda: cut_ours(folder, args.chip_px), lambda: cut_naive(folder, args.chip_px),
                                       args.repeats)
        assert n_a == n_b, (n_a, n_b)
        print(row(f"cut {args.chip_px} px chips, 10 NAIP scenes", "chips", t_a, t_b, n_a, n_b), flush=True)
    if args.only in (None, "embed"):
        from urbanrepml.images import ImageIndex, IndexMeta
        from urbanrepml.models.encoders import get_encoder
        from urbanrepml.sources.imagery.chips import build_chips

        built = build_chips(folder, chip_px=args.chip_px)
        # spread the sample over the scenes, as a real index is
        pick = np.linspace(0, len(built.frame) - 1, args.images).round().astype(int)
        index = ImageIndex(built.frame.iloc[pick], IndexMeta("naip_north_dakota", "chips"))
        encoder = get_encoder("efficientnet_lite0", input_size=args.input_size)
        t_a, t_b, n_a, n_b = alternate(lambda: embed_ours(index, encoder, args.batch, args.workers),
                                       lambda: embed_naive(index, encoder), args.repeats)
        print(row(f"efficientnet_lite0 at {args.input_size} px, batch {args.batch}", "images", t_a, t_b, n_a, n_b))


if __name__ == "__main__":
    main()
