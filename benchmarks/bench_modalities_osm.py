"""Time the OSM modalities (poi, roads) on a bundled area, and SRAI side by side where it does the same work.

    python benchmarks/bench_modalities_osm.py [--study_area porto_alegre] [--resolution 9] [--repeats 5] [--srai-repeats 3]

Ours: pyosmium read + vectorised cell assignment and counting (``PoiModality``,
``RoadsModality``.compute, no MLflow). SRAI: ``OSMPbfLoader`` (QuackOSM on DuckDB)
+ ``IntersectionJoiner`` + ``CountEmbedder`` with the same ``HEX2VEC_FILTER`` and
the same H3 cells. The PBF loader needs DuckDB's ``spatial`` extension; it is
installed from the local ``duckdb-extension-spatial`` wheel when that package is
present (nothing downloads). Without it, SRAI's side of the full pipeline is our
read + SRAI's join + count. SRAI has no offline road-statistics equivalent (its
``OSMWayLoader`` downloads through OSMnx), so roads are timed on our side only.
SRAI's loader runs with ``ignore_cache``.

Each comparison warms up every side, then runs the sides in turn for
``--repeats`` rounds, in this process, and reports medians, spreads and the
speed-up computed round by round (see ``benchmarks/harness.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]  # harness, this checkout

import harness  # noqa: E402
import numpy as np  # noqa: E402


def offline_spatial_extension() -> str:
    """Install DuckDB's spatial extension from the local wheel; return how, or raise with the reason."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("LOAD spatial")
        return "already installed"
    except duckdb.Error:
        pass
    import duckdb_extension_spatial  # the pip package; raises ImportError when absent

    ext = next(Path(duckdb_extension_spatial.__file__).parent.glob(f"extensions/v{duckdb.__version__}/spatial.duckdb_extension"))
    con.execute(f"INSTALL '{ext}'")
    con.execute("LOAD spatial")
    return f"installed from {ext}"


def staged(**parts):
    """A function that runs the named ``parts`` in order and returns their seconds as stages."""

    def run() -> dict:
        stages, out = {}, None
        for name, fn in parts.items():
            start = time.perf_counter()
            out = fn(out)
            stages[name] = time.perf_counter() - start
        return {"stages": stages}

    return run


def srai_loader(pbf: Path, boundary, tags):
    """A function loading the PBF with SRAI's ``OSMPbfLoader`` (no cache) into a scratch folder."""
    from srai.loaders import OSMPbfLoader

    def load(_=None):
        with tempfile.TemporaryDirectory() as tmp:
            cwd = os.getcwd()
            os.chdir(tmp)  # QuackOSM writes its parquet cache under ./files
            try:
                return OSMPbfLoader(pbf_file=pbf, verbosity_mode="silent").load(boundary, tags, ignore_cache=True)
            finally:
                os.chdir(cwd)

    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study_area", default="porto_alegre")
    parser.add_argument("--resolution", type=int, default=9)
    parser.add_argument("--srai-repeats", type=int, default=None, help="rounds SRAI's PBF loader runs in (default: all)")
    harness.add_arguments(parser, repeats=5, warmup=1)
    args = parser.parse_args()

    os.environ.setdefault("URBANREPML_DATA_DIR", tempfile.mkdtemp(prefix="bench-osm-"))
    import geopandas as gpd
    from srai.embedders import CountEmbedder
    from srai.joiners import IntersectionJoiner
    from srai.loaders.osm_loaders.filters import HEX2VEC_FILTER

    from urbanrepml.areas import build_area
    from urbanrepml.config import load_study_area
    from urbanrepml.modalities.poi import PoiModality, count_per_cell
    from urbanrepml.modalities.roads import ROAD_CLASSES, RoadsModality, road_stats
    from urbanrepml.sources.osm import read_highways, read_tagged_features

    spec = load_study_area(args.study_area)
    res = args.resolution
    area = build_area(spec, [res])
    cells = area.cells(res)
    regions = area.regions_gdf(res)
    pbf = spec.sources.osm
    print(f"area {spec.name}, resolution {res}: {len(cells)} cells; PBF {pbf.name} ({pbf.stat().st_size / 1e6:.2f} MB)")

    features = read_tagged_features(pbf, HEX2VEC_FILTER)
    ours, _ = count_per_cell(features, cells, res)
    features_gdf = features.to_srai_gdf()
    joiner, embedder = IntersectionJoiner(), CountEmbedder(expected_output_features=list(ours.columns))
    joint = joiner.transform(regions, features_gdf)
    srai_counts = embedder.transform(regions, features_gdf, joint)
    srai_counts = srai_counts.loc[srai_counts.to_numpy().sum(1) > 0].astype(np.float32).sort_index()
    same = srai_counts.shape == ours.shape and np.array_equal(srai_counts.to_numpy(), ours.sort_index().to_numpy())
    ways = read_highways(pbf, ROAD_CLASSES)
    print(f"ours: {len(features)} POI features ({int(features.is_point.sum())} points) -> "
          f"{ours.shape[0]} cells x {ours.shape[1]} sub-categories; "
          f"{len(ways)} highway ways")
    print(f"SRAI join+count on our features: {srai_counts.shape[0]} cells x {srai_counts.shape[1]}; identical to ours: {same}")

    def run(title: str, sides: list[harness.Side], ratios: bool = True) -> harness.Result:
        print(f"\n## {title}")
        result = harness.compare(sides, repeats=args.repeats, warmup=args.warmup)
        harness.report(result, ratios=ratios)
        return result

    results = {}
    # 1. the whole POI pipeline: PBF -> features -> per-cell counts
    ours_pipeline = harness.Side("urbanrepml", harness.timed(staged(
        read=lambda _: read_tagged_features(pbf, HEX2VEC_FILTER),
        assign_count=lambda f: count_per_cell(f, cells, res))))
    try:
        how = offline_spatial_extension()
        boundary = gpd.GeoDataFrame(geometry=[area.boundary], crs="EPSG:4326")
        load = srai_loader(pbf, boundary, HEX2VEC_FILTER)
        loaded = load()
        print(f"SRAI OSMPbfLoader: DuckDB spatial {how}; {len(loaded)} features ({loaded.geom_type.value_counts().to_dict()})")
        srai_pipeline = harness.Side("SRAI", harness.timed(staged(
            load=load,
            join=lambda g: (g, IntersectionJoiner().transform(regions, g)),
            count=lambda gj: CountEmbedder().transform(regions, *gj))), repeats=args.srai_repeats,
            warmup=max(args.warmup - 1, 0))  # the load above was its first warm-up
        title = "load + join + count: pyosmium read + assign + count vs SRAI OSMPbfLoader (QuackOSM) + IntersectionJoiner + CountEmbedder"
    except Exception as exc:  # noqa: BLE001 - say why the loader path is not timed, time the rest
        print(f"SRAI OSMPbfLoader not timed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        srai_pipeline = harness.Side("ours read + SRAI", harness.timed(staged(
            read=lambda _: read_tagged_features(pbf, HEX2VEC_FILTER).to_srai_gdf(),
            join=lambda g: (g, IntersectionJoiner().transform(regions, g)),
            count=lambda gj: CountEmbedder().transform(regions, *gj))))
        title = "read + join + count: ours vs our read + SRAI IntersectionJoiner + CountEmbedder (no SRAI loader)"
    results["pipeline"] = run(title, [ours_pipeline, srai_pipeline])
    # 2. join + count only, on exactly our features (same geometries, same cells)
    results["join_count"] = run("join + count on the same features: ours (assign + count) vs SRAI IntersectionJoiner + CountEmbedder", [
        harness.Side("urbanrepml", harness.timed(lambda: count_per_cell(features, cells, res))),
        harness.Side("SRAI", harness.timed(staged(
            join=lambda _: joiner.transform(regions, features_gdf),
            count=lambda j: embedder.transform(regions, features_gdf, j))))])
    # 3. our side only (no ratios: these are not alternatives)
    results["ours_only"] = run("ours only: PoiModality.compute, RoadsModality.compute and the roads' parts", [
        harness.Side("poi compute", harness.timed(lambda: PoiModality().compute(spec, area, res))),
        harness.Side("roads compute", harness.timed(lambda: RoadsModality().compute(spec, area, res))),
        harness.Side("roads parts", harness.timed(staged(
            read_pbf=lambda _: read_highways(pbf, ROAD_CLASSES),
            pieces_graph_stats=lambda w: road_stats(w, cells, res))))], ratios=False)
    harness.save(results, args.json)


if __name__ == "__main__":
    main()
