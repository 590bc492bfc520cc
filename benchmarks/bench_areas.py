"""Study-area build: UrbanRepML (vectorised) vs SRAI, side by side, on a Netherlands-sized box.

Builds cells at resolutions 7-10, child->parent maps and 1-ring graphs for the box
lon 4.0-6.9, lat 51.3-53.2 (~42,000 km², ~470K res-9 and ~3.3M res-10 cells).

SRAI path: ``H3Regionalizer(r)`` per resolution, ``H3Neighbourhood.get_neighbours``
for every cell at each resolution, parents with ``h3.cell_to_parent``.
Each path runs in a fresh subprocess so peak memory (ru_maxrss) is its own.

    python benchmarks/bench_areas.py                    # full box, both paths
    python benchmarks/bench_areas.py --scale 0.25       # a smaller box (side fraction)
    python benchmarks/bench_areas.py --srai-graph-res 9 # SRAI graphs only up to res 9 (res 10 extrapolated)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BOX = (4.0, 51.3, 6.9, 53.2)
RESOLUTIONS = (7, 8, 9, 10)


def scaled_box(scale: float) -> tuple[float, float, float, float]:
    minx, miny, maxx, maxy = BOX
    return (minx, miny, minx + (maxx - minx) * scale, miny + (maxy - miny) * scale)


def run_ours(box) -> dict:
    from urbanrepml.areas import build_area

    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / "nl.toml"
        toml.write_text(f'name = "nl_box"\nboundary = {list(box)}\n')
        t0 = time.perf_counter()
        area = build_area(toml, RESOLUTIONS, max_cells=50_000_000, use_cache=False)
        for child, parent in zip(RESOLUTIONS[1:], RESOLUTIONS[:-1]):
            area.parent_index(child, parent)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "stages": {}, "counts": {str(r): c for r, c in area.counts.items()}}


def run_srai(box, graph_max_res: int) -> dict:
    import geopandas as gpd
    import h3
    from shapely.geometry import box as make_box
    from srai.neighbourhoods import H3Neighbourhood
    from srai.regionalizers import H3Regionalizer

    gdf = gpd.GeoDataFrame(geometry=[make_box(*box)], crs=4326)
    stages, counts = {}, {}
    t0 = time.perf_counter()
    regions = {}
    for res in RESOLUTIONS:
        t = time.perf_counter()
        regions[res] = H3Regionalizer(res).transform(gdf)
        stages[f"tessellate_{res}"] = time.perf_counter() - t
        counts[str(res)] = {"cells": len(regions[res])}
    for child, parent in zip(RESOLUTIONS[1:], RESOLUTIONS[:-1]):
        t = time.perf_counter()
        parent_ids = [h3.cell_to_parent(c, parent) for c in regions[child].index]
        pos = {c: i for i, c in enumerate(regions[parent].index)}
        _ = [pos.get(p, -1) for p in parent_ids]
        stages[f"parents_{child}"] = time.perf_counter() - t
    for res in RESOLUTIONS:
        if res > graph_max_res:
            continue
        t = time.perf_counter()
        nb = H3Neighbourhood(regions[res])
        edges = sum(len(nb.get_neighbours(c)) for c in regions[res].index)
        stages[f"graph_{res}"] = time.perf_counter() - t
        counts[str(res)]["edges"] = edges // 2
    seconds = time.perf_counter() - t0
    # Graph time grows linearly with cells: extrapolate skipped resolutions from the finest measured one.
    measured = [r for r in RESOLUTIONS if r <= graph_max_res]
    extrapolated = 0.0
    if measured and measured[-1] < RESOLUTIONS[-1]:
        per_cell = stages[f"graph_{measured[-1]}"] / counts[str(measured[-1])]["cells"]
        for res in RESOLUTIONS:
            if res > graph_max_res:
                stages[f"graph_{res}_extrapolated"] = per_cell * counts[str(res)]["cells"]
                extrapolated += stages[f"graph_{res}_extrapolated"]
    return {"seconds": seconds, "seconds_with_extrapolation": seconds + extrapolated, "stages": stages, "counts": counts}


def child(which: str, scale: float, graph_max_res: int) -> None:
    box = scaled_box(scale)
    result = run_ours(box) if which == "ours" else run_srai(box, graph_max_res)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the box side lengths")
    parser.add_argument("--srai-graph-res", type=int, default=10, help="finest resolution SRAI builds graphs for")
    parser.add_argument("--child", choices=["ours", "srai"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.scale, args.srai_graph_res)
        return
    results = {}
    for which in ("ours", "srai"):
        out = subprocess.run([sys.executable, __file__, "--child", which, "--scale", str(args.scale), "--srai-graph-res", str(args.srai_graph_res)],
                             capture_output=True, text=True, check=True)
        results[which] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, srai = results["ours"], results["srai"]
    print(f"box {scaled_box(args.scale)}  resolutions {RESOLUTIONS}")
    for res in RESOLUTIONS:
        c = ours["counts"][str(res)]
        print(f"  res {res}: {c['cells']:>9,} cells  {c['edges']:>10,} edges   (SRAI cells {srai['counts'][str(res)]['cells']:,})")
    print(f"urbanrepml: {ours['seconds']:8.2f} s   peak RSS {ours['peak_rss_mb']:8.0f} MB")
    print(f"SRAI      : {srai['seconds']:8.2f} s   peak RSS {srai['peak_rss_mb']:8.0f} MB")
    for stage, secs in srai["stages"].items():
        print(f"    {stage:>26}: {secs:8.2f} s")
    srai_total = srai.get("seconds_with_extrapolation", srai["seconds"])
    if srai_total != srai["seconds"]:
        print(f"SRAI incl. extrapolated graphs: {srai_total:.2f} s")
    print(f"speed-up (SRAI / urbanrepml): {srai_total / ours['seconds']:.1f}x")


if __name__ == "__main__":
    main()
