"""Time the OSM modalities (poi, roads) on a bundled area, and SRAI side by side where it does the same work.

    python benchmarks/bench_modalities_osm.py [--study_area porto_alegre] [--resolution 9] [--repeats 3]

Ours: pyosmium read + vectorised cell assignment and counting (``PoiModality``,
``RoadsModality``.compute, no MLflow). SRAI: ``OSMPbfLoader`` (QuackOSM on DuckDB)
+ ``IntersectionJoiner`` + ``CountEmbedder`` with the same ``HEX2VEC_FILTER`` and
the same H3 cells. The PBF loader needs DuckDB's ``spatial`` extension; it is
installed from the local ``duckdb-extension-spatial`` wheel when that package is
present (nothing downloads). Without it, only SRAI's join + count is timed, on
the features we loaded. SRAI has no offline road-statistics equivalent
(its ``OSMWayLoader`` downloads through OSMnx), so roads are timed on our side only.
Best of ``--repeats`` wall-clock seconds; SRAI's loader runs with ``ignore_cache``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def best(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study_area", default="porto_alegre")
    parser.add_argument("--resolution", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    os.environ.setdefault("URBANREPML_DATA_DIR", tempfile.mkdtemp(prefix="bench-osm-"))
    import geopandas as gpd
    from srai.embedders import CountEmbedder
    from srai.joiners import IntersectionJoiner
    from srai.loaders.osm_loaders.filters import HEX2VEC_FILTER

    from urbanrepml.areas import build_area
    from urbanrepml.config import load_study_area
    from urbanrepml.sources.osm import read_highways, read_tagged_features
    from urbanrepml.modalities.poi import PoiModality, count_per_cell
    from urbanrepml.modalities.roads import ROAD_CLASSES, RoadsModality, road_stats

    spec = load_study_area(args.study_area)
    res = args.resolution
    area = build_area(spec, [res])
    cells = area.cells(res)
    regions = area.regions_gdf(res)
    pbf = spec.sources.osm
    print(f"area {spec.name}, resolution {res}: {len(cells)} cells; PBF {pbf.name} ({pbf.stat().st_size / 1e6:.2f} MB); best of {args.repeats}")

    rows = []
    t_read, features = best(lambda: read_tagged_features(pbf, HEX2VEC_FILTER), args.repeats)
    t_count, (ours, _) = best(lambda: count_per_cell(features, cells, res), args.repeats)
    t_poi, poi = best(lambda: PoiModality().compute(spec, area, res), args.repeats)
    rows += [("ours  poi: read PBF (pyosmium, filter)", t_read), ("ours  poi: assign + count", t_count), ("ours  poi: compute total", t_poi)]
    t_rread, ways = best(lambda: read_highways(pbf, ROAD_CLASSES), args.repeats)
    t_rstats, _ = best(lambda: road_stats(ways, cells, res), args.repeats)
    t_roads, roads = best(lambda: RoadsModality().compute(spec, area, res), args.repeats)
    rows += [("ours  roads: read PBF (pyosmium)", t_rread), ("ours  roads: pieces + graph stats", t_rstats), ("ours  roads: compute total", t_roads)]
    print(f"ours: {len(features)} POI features ({int(features.is_point.sum())} points) -> {poi.features.shape[0]} cells x {poi.features.shape[1]} sub-categories; "
          f"{len(ways)} highway ways -> {roads.features.shape[0]} cells x {roads.features.shape[1]} road columns")

    # SRAI join + count on exactly our features (same geometries, same cells)
    features_gdf = features.to_srai_gdf()
    joiner, embedder = IntersectionJoiner(), CountEmbedder(expected_output_features=list(ours.columns))
    t_join, joint = best(lambda: joiner.transform(regions, features_gdf), args.repeats)
    t_emb, srai_counts = best(lambda: embedder.transform(regions, features_gdf, joint), args.repeats)
    srai_counts = srai_counts.loc[srai_counts.to_numpy().sum(1) > 0].astype(np.float32).sort_index()
    same = srai_counts.shape == ours.shape and np.array_equal(srai_counts.to_numpy(), ours.sort_index().to_numpy())
    rows += [("SRAI  IntersectionJoiner (our features)", t_join), ("SRAI  CountEmbedder (our features)", t_emb)]
    print(f"SRAI join+count on our features: {srai_counts.shape[0]} cells x {srai_counts.shape[1]}; identical to ours: {same}")

    t_load = None
    try:
        how = offline_spatial_extension()
        from srai.loaders import OSMPbfLoader

        boundary = gpd.GeoDataFrame(geometry=[area.boundary], crs="EPSG:4326")
        with tempfile.TemporaryDirectory() as tmp:
            cwd = os.getcwd()
            os.chdir(tmp)  # QuackOSM writes its parquet cache under ./files
            try:
                loader = OSMPbfLoader(pbf_file=pbf, verbosity_mode="silent")
                t_load, loaded = best(lambda: loader.load(boundary, HEX2VEC_FILTER, ignore_cache=True), max(1, min(args.repeats, 2)))
            finally:
                os.chdir(cwd)
        t_join2, joint2 = best(lambda: IntersectionJoiner().transform(regions, loaded), args.repeats)
        t_emb2, counts2 = best(lambda: CountEmbedder().transform(regions, loaded, joint2), args.repeats)
        counts2 = counts2.loc[counts2.to_numpy().sum(1) > 0]
        rows += [("SRAI  OSMPbfLoader (QuackOSM/DuckDB)", t_load), ("SRAI  IntersectionJoiner (loaded)", t_join2), ("SRAI  CountEmbedder (loaded)", t_emb2)]
        print(f"SRAI OSMPbfLoader: DuckDB spatial {how}; {len(loaded)} features "
              f"({loaded.geom_type.value_counts().to_dict()}) -> {counts2.shape[0]} cells x {counts2.shape[1]} columns")
    except Exception as exc:  # noqa: BLE001 - report why the loader path is not timed
        print(f"SRAI OSMPbfLoader not timed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")

    print()
    width = max(len(r[0]) for r in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:8.3f} s")
    ours_pipeline = t_read + t_count
    print()
    print(f"join+count only: SRAI {t_join + t_emb:.3f} s vs ours (assign+count) {t_count:.3f} s -> ratio {(t_join + t_emb) / t_count:.1f}x")
    if t_load is not None:
        srai_pipeline = t_load + t_join2 + t_emb2
        print(f"load+join+count: SRAI {srai_pipeline:.3f} s vs ours (read+assign+count) {ours_pipeline:.3f} s -> ratio {srai_pipeline / ours_pipeline:.1f}x")
    else:
        srai_pipeline = t_read + t_join + t_emb
        print(f"our read + SRAI join+count {srai_pipeline:.3f} s vs ours {ours_pipeline:.3f} s -> ratio {srai_pipeline / ours_pipeline:.1f}x")


if __name__ == "__main__":
    main()
