"""The ``cluster`` stage: k-means of an embedding table (a registered model or a file) with scores and maps."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from urbanrepml.analysis.cluster import cluster_embeddings
from urbanrepml.analysis.figures import cluster_scores
from urbanrepml.areas import build_area
from urbanrepml.config import DEFAULT_STUDY_AREA, load_study_area
from urbanrepml.params import param
from urbanrepml.stages.base import Stage
from urbanrepml.stages.probe import ProbeInput, resolve_input


def _load_for_cluster(study_area: str, model_uri: str | None, table: str | None) -> ProbeInput:
    return resolve_input(study_area, model_uri, table)


def run_cluster_stage(study_area: str, *, model_uri: str | None = None, table: str | None = None,
                      k_min: int = 2, k_max: int = 10, seed: int = 0, coarser: int = 2, nested: bool | None = None) -> pd.DataFrame:
    """k-means over ``k_min..k_max`` at the table's resolution and ``coarser`` coarser ones; log scores, labels, maps."""
    import mlflow

    from urbanrepml.analysis.maps import cells_map
    from urbanrepml.tracking import configure_tracking, log_figure, log_table_input, stage_run
    from urbanrepml.tracking.runs import log_new_params

    spec = load_study_area(study_area)
    configure_tracking()
    inp = _load_for_cluster(spec.name, model_uri, table)
    res = inp.table.meta.resolution
    resolutions = [r for r in range(res - coarser, res + 1) if r >= 0]
    area = build_area(spec, resolutions)
    params = {"study_area": study_area, "model_uri": model_uri or "", "table": table or "", "k_min": k_min,
              "k_max": k_max, "seed": seed, "resolved.input": inp.uri, "resolutions": ",".join(map(str, resolutions))}
    if nested is None:
        nested = mlflow.active_run() is not None
    with stage_run("cluster", spec.name, tags={"input": inp.kind, "resolution": res}, run_name=f"cluster-{inp.kind}",
                   nested=nested) as run:
        log_new_params(params)
        if inp.table.path is not None:
            log_table_input("embeddings", inp.table.path, source_uri=inp.uri if inp.kind == "model" else None, context="cluster_input")
        result = cluster_embeddings(inp.table.frame, resolutions, k_min, k_max, seed)
        for row in result.scores.itertuples():
            mlflow.log_metric(f"silhouette_res{row.resolution}", row.silhouette, step=int(row.k))
            mlflow.log_metric(f"calinski_harabasz_res{row.resolution}", row.calinski_harabasz, step=int(row.k))
        mlflow.log_metrics({f"best_k_res{r}": k for r, k in result.best_k.items()})
        mlflow.log_metrics({f"cells_res{r}": len(lab) for r, lab in result.labels.items()})
        with tempfile.TemporaryDirectory() as tmp:
            result.scores.to_csv(Path(tmp) / "scores.csv", index=False)
            for r, labels in result.labels.items():
                labels.to_frame().to_parquet(Path(tmp) / f"labels_res{r}.parquet")
            mlflow.log_artifacts(tmp, artifact_path="cluster")
        log_figure(cluster_scores(result.scores, f"{spec.name}: k-means scores"), "cluster_scores", png=True)
        for r, labels in result.labels.items():
            k = result.best_k[r]
            regions = area.regions_gdf(r)
            log_figure(cells_map(regions.loc[labels.index], labels.astype(float),
                                 title=f"{spec.name} res {r}: k-means, k={k} (best silhouette)",
                                 color_name="cluster"), f"clusters_res{r}", png=True)
        note = [inp.note] + [f"res {r}: best k {k} "
                             f"(silhouette {result.scores.query('resolution == @r and k == @k')['silhouette'].iloc[0]:.3f})"
                             for r, k in result.best_k.items()] + [f"run {run.info.run_id}"]
        mlflow.set_tag("mlflow.note.content", "\n".join(note))
        print("\n".join(note))
    return result.scores


@dataclass
class Params:
    """Parameters of the ``cluster`` entry point."""

    study_area: str = param(DEFAULT_STUDY_AREA, "bundled area name or path to a study-area TOML")
    model_uri: str | None = param(None, "models:/... (default: the area's @champion, else @candidate)")
    table: str | None = param(None, "path of an embedding table instead of a model")
    k_min: int = param(2, "fewest clusters")
    k_max: int = param(10, "most clusters")
    seed: int = param(0, "k-means seed")


def run(p: Params) -> pd.DataFrame:
    """Cluster and log (see :func:`run_cluster_stage`)."""
    return run_cluster_stage(p.study_area, model_uri=p.model_uri, table=p.table, k_min=p.k_min, k_max=p.k_max, seed=p.seed)


STAGES = {"cluster": Stage("cluster", "k-means of embeddings over several k and resolutions, with scores and maps", Params, run)}
