"""Study-area build: UrbanRepML vs SRAI, side by side, on a Netherlands-sized box.

Builds cells at resolutions 7-10, child->parent maps and 1-ring graphs for the box
lon 4.0-6.9, lat 51.3-53.2 (~42,000 km², ~470K res-9 and ~3.3M res-10 cells).

SRAI path: ``H3Regionalizer(r)`` per resolution, ``H3Neighbourhood.get_neighbours``
for every cell at each resolution, parents with ``h3.cell_to_parent``.
Every run of either side is a fresh subprocess, so its peak memory (ru_maxrss) is
its own; the seconds are those of the work (imports left out on both sides).
After one warm-up run per side, the sides run in turn (ours, SRAI, ours, SRAI,
...) for ``--repeats`` rounds; the report gives each side's median and spread and
the speed-up computed round by round (see ``benchmarks/harness.py``).

    python benchmarks/bench_areas.py                     # full box, 5 rounds
    python benchmarks/bench_areas.py --srai-repeats 3    # SRAI (~50 s a run) in 3 of the 5 rounds
    python benchmarks/bench_areas.py --scale 0.25        # a smaller box (side fraction)
    python benchmarks/bench_areas.py --srai-graph-res 9  # SRAI graphs only up to res 9 (res 10 extrapolated)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]  # harness, this checkout

import harness  # noqa: E402

BOX = (4.0, 51.3, 6.9, 53.2)
RESOLUTIONS = (7, 8, 9, 10)


def scaled_box(scale: float) -> tuple[float, float, float, float]:
    """The south-west part of the box with ``scale`` of its side lengths."""
    minx, miny, maxx, maxy = BOX
    return (minx, miny, minx + (maxx - minx) * scale, miny + (maxy - miny) * scale)


def run_ours(box) -> harness.Run:
    """Cells, parent maps and graphs with :func:`urbanrepml.areas.build_area` (no cache)."""
    from urbanrepml.areas import build_area

    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / "nl.toml"
        toml.write_text(f'name = "nl_box"\nboundary = {list(box)}\n')
        t0 = time.perf_counter()
        area = build_area(toml, RESOLUTIONS, max_cells=50_000_000, use_cache=False)
        for child, parent in zip(RESOLUTIONS[1:], RESOLUTIONS[:-1], strict=False):
            area.parent_index(child, parent)
        seconds = time.perf_counter() - t0
    return harness.Run(seconds, info={"counts": {str(r): c for r, c in area.counts.items()}})


def run_srai(box, graph_max_res: int) -> harness.Run:
    """The same with SRAI; graphs above ``graph_max_res`` are extrapolated from the finest one built."""
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
    for child, parent in zip(RESOLUTIONS[1:], RESOLUTIONS[:-1], strict=False):
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
    return harness.Run(seconds + extrapolated, stages=stages, info={"counts": counts, "measured_seconds": seconds})


def child(which: str, scale: float, graph_max_res: int) -> None:
    """Run one side once in this process and emit its :class:`harness.Run`."""
    box = scaled_box(scale)
    harness.emit(run_ours(box) if which == "ours" else run_srai(box, graph_max_res))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the box side lengths")
    parser.add_argument("--srai-graph-res", type=int, default=10, help="finest resolution SRAI builds graphs for")
    parser.add_argument("--srai-repeats", type=int, default=None, help="rounds SRAI runs in (default: all)")
    harness.add_arguments(parser, repeats=5, warmup=1)
    parser.add_argument("--child", choices=["ours", "srai"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.scale, args.srai_graph_res)
        return

    def side(which: str):
        return harness.subprocess_side([sys.executable, __file__, "--child", which, "--scale", str(args.scale),
                                        "--srai-graph-res", str(args.srai_graph_res)])

    print(f"box {scaled_box(args.scale)}  resolutions {RESOLUTIONS}")
    if args.srai_graph_res < RESOLUTIONS[-1]:
        print(f"SRAI builds graphs up to res {args.srai_graph_res}; finer graphs are extrapolated (linear in cells)")
    result = harness.compare([harness.Side("urbanrepml", side("ours")),
                              harness.Side("SRAI", side("srai"), repeats=args.srai_repeats)],
                             repeats=args.repeats, warmup=args.warmup)
    ours = (result.runs("urbanrepml") + result.warmups["urbanrepml"])[0]
    srai = (result.runs("SRAI") + result.warmups["SRAI"] + [None])[0]
    for res in RESOLUTIONS:
        c = ours.info["counts"][str(res)]
        theirs = f"   (SRAI cells {srai.info['counts'][str(res)]['cells']:,})" if srai else ""
        print(f"  res {res}: {c['cells']:>9,} cells  {c['edges']:>10,} edges{theirs}")
    harness.report(result)
    harness.save(result, args.json)


if __name__ == "__main__":
    main()
