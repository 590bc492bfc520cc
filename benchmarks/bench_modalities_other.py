"""Time the gtfs, raster, alphaearth and aerial modalities on the bundled Porto Alegre area.

gtfs and raster run on the bundled files (poa_eptc.zip + poa_trensurb.zip, poa_elevation.tif);
alphaearth and aerial on rasters generated here over the whole area (64-band int8 at
``--ae_pixel_m``, RGB uint8 at ``--ortho_pixel_m``). The raster modality is also
compared with the per-cell approach (``rasterio.mask`` once per cell polygon), which is
what a zonal-statistics loop does. Times are ``Modality.compute`` only (no MLflow), in
this process: one warm-up run, then ``--repeats`` rounds; each figure is the median
with its spread, the raster speed-up is computed round by round against the
baseline (see ``benchmarks/harness.py``).

    python benchmarks/bench_modalities_other.py [--resolution 9] [--repeats 5] [--baseline_repeats 3] [--ae_pixel_m 10] [--ortho_pixel_m 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]  # harness, this checkout

import harness  # noqa: E402
import numpy as np  # noqa: E402


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


def measure(title: str, sides: list[harness.Side], args, ratios: bool = False) -> harness.Result:
    """Warm up, run the rounds and print the report of one group of sides."""
    print(f"\n## {title}")
    result = harness.compare(sides, repeats=args.repeats, warmup=args.warmup)
    harness.report(result, ratios=ratios)
    return result


def kept(fn, into: dict, key: str):
    """``fn`` that also keeps its latest output in ``into[key]`` (to count cells after timing)."""

    def run():
        into[key] = fn()

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=9)
    harness.add_arguments(parser, repeats=5, warmup=1, aliases=("--repeat",))
    parser.add_argument("--baseline_repeats", type=int, default=None, help="rounds the per-cell baseline runs in (default: all)")
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
        out: dict = {}
        results: dict[str, harness.Result] = {}
        rows = []
        print(f"# porto_alegre res {res}: {n_cells} cells; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")

        feeds = [read_feed(p) for p in spec.sources.gtfs]
        results["gtfs"] = measure("gtfs: GTFSModality.compute (2 feeds, auto date) and its parts", [
            harness.Side("gtfs total", harness.timed(kept(lambda: GTFSModality().compute(spec, area, res), out, "gtfs"))),
            harness.Side("read feeds", harness.timed(lambda: [read_feed(p) for p in spec.sources.gtfs])),
            harness.Side("auto date", harness.timed(lambda: choose_service_date(feeds)))], args)
        t_read, t_auto = results["gtfs"].seconds("read feeds").median, results["gtfs"].seconds("auto date").median
        rows.append(("gtfs (2 feeds, auto date, total)", results["gtfs"].seconds("gtfs total"), len(out["gtfs"].features),
                     f"read {t_read:.2f}s, auto-date {t_auto:.3f}s"))

        elevation = spec.sources.rasters["elevation"]
        raster_sides = [harness.Side("raster", harness.timed(kept(lambda: RasterModality().compute(spec, area, res), out, "raster")))]
        if not args.skip_baseline:
            raster_sides.append(harness.Side("per-cell mask",
                                             harness.timed(kept(lambda: per_cell_mask_baseline(elevation, area, res), out, "baseline")),
                                             repeats=args.baseline_repeats))
        results["raster"] = measure("raster: RasterModality.compute vs rasterio.mask once per cell", raster_sides, args, ratios=True)
        t_r = results["raster"].seconds("raster")
        with __import__("rasterio").open(elevation) as src:
            px = src.width * src.height
        rows.append(("raster (poa_elevation.tif)", t_r, len(out["raster"].features), f"{px / t_r.median / 1e6:.1f} M px/s"))
        if not args.skip_baseline:
            speed_up = harness.Summary.of(results["raster"].ratios("per-cell mask")).median
            rows.append(("  baseline: rasterio.mask per cell", results["raster"].seconds("per-cell mask"), out["baseline"],
                         f"ratio {speed_up:.1f}x slower (median of per-round ratios)"))

        bbox = area.boundary.bounds
        ae = tmp / "alphaearth.tif"
        t_gen = time.perf_counter()
        w, h = generate_alphaearth(ae, bbox, args.ae_pixel_m)
        t_gen = time.perf_counter() - t_gen
        results["alphaearth"] = measure("alphaearth: AlphaEarthModality.compute on a generated raster", [
            harness.Side("alphaearth",
                         harness.timed(kept(lambda: AlphaEarthModality(2024, "local", str(ae)).compute(spec, area, res), out, "ae")))],
            args)
        t_ae = results["alphaearth"].seconds("alphaearth")
        rows.append((f"alphaearth ({w}x{h} px x 64 int8 at {args.ae_pixel_m:g} m)", t_ae, len(out["ae"].features),
                     f"{w * h / t_ae.median / 1e6:.2f} M px/s ({w * h * 64 / t_ae.median / 1e6:.0f} M values/s); generate {t_gen:.1f}s"))

        ortho = tmp / "ortho.tif"
        w, h = generate_ortho(ortho, bbox, args.ortho_pixel_m)
        results["aerial"] = measure("aerial: AerialModality.compute on a generated orthophoto", [
            harness.Side("aerial",
                         harness.timed(kept(lambda: AerialModality(str(ortho), None, args.tile_px).compute(spec, area, res),
                                            out, "aerial")))],
            args)
        t_aerial = results["aerial"].seconds("aerial")
        rows.append((f"aerial ({w}x{h} px RGB at {args.ortho_pixel_m:g} m, {args.tile_px}px tiles, builtin CNN)", t_aerial,
                     len(out["aerial"].features), f"{len(out['aerial'].features) / t_aerial.median:.0f} tiles/s"))

        print(f"\n{'modality':<72} {'median s':>8} {'min':>7} {'max':>7} {'cells':>6}  notes")
        for name, secs, cells, note in rows:
            print(f"{name:<72} {secs.median:8.2f} {secs.low:7.2f} {secs.high:7.2f} {cells:6d}  {note}")
        harness.save(results, args.json)


if __name__ == "__main__":
    main()
