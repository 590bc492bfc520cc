"""Time the gtfs, raster, alphaearth and aerial modalities on the bundled Porto Alegre area.

gtfs and raster run on the bundled files (poa_eptc.zip + poa_trensurb.zip, poa_elevation.tif);
alphaearth and aerial on rasters generated here over the whole area (64-band int8 at
``--ae_pixel_m``, RGB uint8 at ``--ortho_pixel_m``). The raster modality is also
compared with the per-cell approach (``rasterio.mask`` once per cell polygon), which is
what a zonal-statistics loop does. Times are ``Modality.compute`` only (no MLflow), best
of ``--repeat`` runs after one warm-up.

    python benchmarks/bench_modalities_other.py [--resolution 9] [--repeat 3] [--ae_pixel_m 10] [--ortho_pixel_m 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def best_of(fn, repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def write_area(tmp: Path, rasters: dict[str, Path]) -> Path:
    from urbanrepml.config import load_study_area

    base = load_study_area("porto_alegre")
    lines = ['name = "porto_alegre"', f"boundary = {list(base.boundary)}", "[sources.rasters]"]
    lines += [f'{k} = "{v}"' for k, v in rasters.items()]
    (tmp / "area.toml").write_text("\n".join(lines) + "\n")
    return tmp / "area.toml"


def generate_alphaearth(path: Path, bbox, pixel_m: float) -> tuple[int, int]:
    import rasterio
    from rasterio.transform import from_origin

    deg = pixel_m / 111_320
    minx, miny, maxx, maxy = bbox
    w, h = int((maxx - minx) / deg), int((maxy - miny) / deg)
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=64, dtype="int8", nodata=-128,
                       crs="EPSG:4326", transform=from_origin(minx, maxy, deg, deg), tiled=True, blockxsize=256, blockysize=256) as dst:
        for k in range(64):
            dst.write(rng.integers(-127, 128, size=(h, w), dtype=np.int8), k + 1)
    return w, h


def generate_ortho(path: Path, bbox, pixel_m: float) -> tuple[int, int]:
    import rasterio
    from rasterio.transform import from_origin

    deg = pixel_m / 111_320
    minx, miny, maxx, maxy = bbox
    w, h = int((maxx - minx) / deg), int((maxy - miny) / deg)
    rng = np.random.default_rng(1)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8",
                       crs="EPSG:4326", transform=from_origin(minx, maxy, deg, deg), tiled=True, blockxsize=256, blockysize=256) as dst:
        for k in range(3):
            dst.write(rng.integers(0, 256, size=(h, w), dtype=np.uint8), k + 1)
    return w, h


def per_cell_mask_baseline(path: Path, area, resolution: int) -> int:
    """The loop a zonal-statistics tool runs: rasterio.mask.mask once per cell polygon."""
    import rasterio
    from rasterio.mask import mask

    regions = area.regions_gdf(resolution)
    n = 0
    with rasterio.open(path) as src:
        for geom in regions.geometry:
            try:
                data, _ = mask(src, [geom], crop=True, all_touched=False, filled=False)
            except ValueError:  # polygon outside the raster
                continue
            if data.count() > 0:
                _ = (data.mean(), data.std(), data.count())
                n += 1
    return n


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=9)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ae_pixel_m", type=float, default=10.0)
    parser.add_argument("--ortho_pixel_m", type=float, default=2.0)
    parser.add_argument("--tile_px", type=int, default=64)
    parser.add_argument("--skip_baseline", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        os.environ.setdefault("URBANREPML_DATA_DIR", str(tmp / "data"))
        from urbanrepml.areas import build_area
        from urbanrepml.config import load_study_area
        from urbanrepml.modalities.aerial import AerialModality
        from urbanrepml.modalities.alphaearth import AlphaEarthModality
        from urbanrepml.modalities.gtfs import GTFSModality, choose_service_date, read_feed
        from urbanrepml.modalities.raster import RasterModality

        res = args.resolution
        spec = load_study_area("porto_alegre")
        area = build_area(spec, [res])
        n_cells = len(area.cells(res))
        rows = []
        print(f"# porto_alegre res {res}: {n_cells} cells; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")

        t_read, feeds = best_of(lambda: [read_feed(p) for p in spec.sources.gtfs], args.repeat)
        t_auto, _ = best_of(lambda: choose_service_date(feeds), args.repeat)
        t_gtfs, r = best_of(lambda: GTFSModality().compute(spec, area, res), args.repeat)
        rows.append(("gtfs (2 feeds, auto date, total)", t_gtfs, len(r.features), f"read {t_read:.2f}s, auto-date {t_auto:.3f}s"))

        t_r, r = best_of(lambda: RasterModality().compute(spec, area, res), args.repeat)
        with __import__("rasterio").open(spec.sources.rasters["elevation"]) as src:
            px = src.width * src.height
        rows.append(("raster (poa_elevation.tif)", t_r, len(r.features), f"{px / t_r / 1e6:.1f} M px/s"))
        if not args.skip_baseline:
            t_b, n_b = best_of(lambda: per_cell_mask_baseline(spec.sources.rasters["elevation"], area, res), 1)
            rows.append(("  baseline: rasterio.mask per cell", t_b, n_b, f"ratio {t_b / t_r:.1f}x slower"))

        bbox = area.boundary.bounds
        ae = tmp / "alphaearth.tif"
        t_gen = time.perf_counter()
        w, h = generate_alphaearth(ae, bbox, args.ae_pixel_m)
        t_gen = time.perf_counter() - t_gen
        t_ae, r = best_of(lambda: AlphaEarthModality(2024, "local", str(ae)).compute(spec, area, res), args.repeat)
        rows.append((f"alphaearth ({w}x{h} px x 64 int8 at {args.ae_pixel_m:g} m)", t_ae, len(r.features),
                     f"{w * h / t_ae / 1e6:.2f} M px/s ({w * h * 64 / t_ae / 1e6:.0f} M values/s); generate {t_gen:.1f}s"))

        ortho = tmp / "ortho.tif"
        w, h = generate_ortho(ortho, bbox, args.ortho_pixel_m)
        t_ae, r = best_of(lambda: AerialModality(str(ortho), None, args.tile_px).compute(spec, area, res), args.repeat)
        rows.append((f"aerial ({w}x{h} px RGB at {args.ortho_pixel_m:g} m, {args.tile_px}px tiles, builtin CNN)", t_ae,
                     len(r.features), f"{len(r.features) / t_ae:.0f} tiles/s"))

        print(f"{'modality':<72} {'seconds':>8} {'cells':>6}  notes")
        for name, secs, cells, note in rows:
            print(f"{name:<72} {secs:8.2f} {cells:6d}  {note}")


if __name__ == "__main__":
    main()
