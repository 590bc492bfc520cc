"""The ``area`` stage: build a study area, and log what it holds to MLflow."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from urbanrepml.analysis.maps import cells_map
from urbanrepml.areas.area import Area, build_area
from urbanrepml.config import DEFAULT_STUDY_AREA, load_study_area
from urbanrepml.params import param
from urbanrepml.stages.base import Stage
from urbanrepml.tracking import log_figure, log_frame_input, log_source_files, stage_run


def run_area_stage(study_area: str, resolutions: str = "7,8,9,10", max_cells: int | None = None) -> Area:
    """Build (or load) the area, log counts, boundary, cells and a map; return the area."""
    spec = load_study_area(study_area)
    with stage_run("area", spec.name, params={"study_area": study_area, "resolutions": resolutions, "max_cells": max_cells}) as run:
        start = time.perf_counter()
        area = build_area(spec, resolutions, max_cells=max_cells)
        files = {"study_area.toml": spec.source_file}
        if isinstance(spec.boundary, Path):
            files["boundary"] = spec.boundary
        log_source_files(files)
        import mlflow

        metrics = {"build_seconds": time.perf_counter() - start}
        for res, c in area.counts.items():
            metrics[f"cells_res{res}"] = c["cells"]
            metrics[f"edges_res{res}"] = c["edges"]
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            boundary_path = Path(tmp) / "boundary.geojson"
            import geopandas as gpd

            gpd.GeoDataFrame({"name": [spec.name]}, geometry=[area.boundary], crs="EPSG:4326").to_file(boundary_path, driver="GeoJSON")
            mlflow.log_artifact(str(boundary_path), artifact_path="area")
            for res in area.resolutions:
                cells_path = Path(tmp) / f"cells_res{res}.parquet"
                area.region_ids(res).to_frame(index=False).to_parquet(cells_path, index=False)
                mlflow.log_artifact(str(cells_path), artifact_path="area")
            # The cells at the finest resolution as a dataset, so lineage shows what area a run used.
            finest = area.resolutions[-1]
            import pandas as pd

            cells_df = pd.DataFrame({"region_id": area.region_ids(finest)})
            log_frame_input(cells_df, f"{spec.name}_cells_res{finest}", spec.source_file, context="area")
        coarse = area.resolutions[0] if len(area.region_ids(area.resolutions[-1])) > 50_000 else area.resolutions[-1]
        log_figure(cells_map(area.regions_gdf(coarse), title=f"{spec.name}: H3 cells at resolution {coarse}", boundary=area.boundary),
                   f"cells_res{coarse}")
        mlflow.set_tag("mlflow.note.content",
                       f"{spec.name}: " + ", ".join(f"res {r}: {c['cells']:,} cells" for r, c in area.counts.items()))
        print(f"area {spec.name}: " + "; ".join(f"res {r}: {c['cells']:,} cells, {c['edges']:,} edges" for r, c in area.counts.items()))
        print(f"run {run.info.run_id}")
    return area


@dataclass
class Params:
    """Parameters of the ``area`` entry point."""

    study_area: str = param(DEFAULT_STUDY_AREA, "bundled area name or path to a study-area TOML")
    resolutions: str = param("7,8,9,10", "comma-separated H3 resolutions")
    max_cells: int = param(0, "refuse areas estimated above this many cells (0: URBANREPML_MAX_CELLS or 5,000,000)")


def run(p: Params) -> Area:
    """Build the area and log it (see :func:`run_area_stage`)."""
    return run_area_stage(p.study_area, p.resolutions, p.max_cells or None)


STAGES = {"area": Stage("area", "boundary -> H3 cells per resolution, parent maps, 1-ring graphs (cached), logged", Params, run)}
