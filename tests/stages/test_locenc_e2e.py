"""The locenc, locenc_embed and location entry points end to end on a real SQLite store, on Porto Alegre's targets.

The records are a stand-in modality table logged as a stage-1 run (random Fourier features of the
cell centres, a learnable function of place), so ``locenc`` finds them in the store as it finds the
real modality tables; the probes use the real IPEA hexgrid targets.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.support.processes import REPO, clean_env, load_entry
from urbanrepml.areas import build_area, h3ops
from urbanrepml.datasets import fetch
from urbanrepml.params import make
from urbanrepml.tables import EmbeddingTable, TableMeta, to_embedding_frame, write_table

HEXGRID = fetch("porto_alegre") / "poa_hexgrid.csv"
SMALL = ["--epochs", "4", "--hidden", "32", "--embedding_dim", "16", "--map_size", "16", "--compare_geoclip", "false"]


def poa_area(tmp_path: Path, name: str) -> str:
    """Porto Alegre under its own name, with log1p population and jobs as targets."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\nboundary = [-51.266, -30.113, -51.132, -29.988]\n\n'
                    f'[targets.hexgrid]\npath = "{HEXGRID}"\nid = "id"\ncolumns = ["population", "jobs"]\n'
                    'transform = { population = "log1p", jobs = "log1p" }\n')
    return str(path)


def log_coords_table(area: str, modality: str = "coords") -> Path:
    """A finished stage-1 run holding a stand-in modality table of ``area`` (Fourier features of the cell centres)."""
    from urbanrepml.config import load_study_area
    from urbanrepml.stages.modality import table_path
    from urbanrepml.tracking import log_embedding_table, stage_run

    spec = load_study_area(area)
    built = build_area(spec, [9])
    cells = built.cells(9)
    lat, lon = h3ops.cell_centroids(cells)
    z = np.column_stack([(lat - lat.mean()) / lat.std(), (lon - lon.mean()) / lon.std()])
    w = np.random.default_rng(1).normal(size=(2, 6)) * 2.5
    frame, names = to_embedding_frame(np.column_stack([np.sin(z @ w), np.cos(z @ w)]), built.region_ids(9), modality)
    table = EmbeddingTable(frame, TableMeta(modality=modality, resolution=9, study_area=spec.name, prefix=modality,
                                            feature_names=names))
    path = table_path(spec.name, modality, 9)
    with stage_run("modality", spec.name, tags={"modality": modality, "resolution": 9}):
        write_table(table, path, area_cells=cells)
        log_embedding_table(table)
    return path


def runs_of(client: MlflowClient, area_name: str, stage: str):
    exp = client.get_experiment_by_name(f"urbanrepml-{area_name}")
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`urbanrepml.stage` = '{stage}'",
                              order_by=["attributes.start_time ASC"])


def test_locenc_trains_evaluates_maps_registers_and_serves(tracking, tmp_path):
    import mlflow

    area, name = poa_area(tmp_path, "poa_locenc"), "poa_locenc"
    coords = log_coords_table(area)
    env = clean_env(PYTHONPATH=str(REPO), URBANREPML_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run([sys.executable, "-m", "urbanrepml", "locenc", "--study_area", area, *SMALL], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "registered urbanrepml-locenc-poa_locenc version 1" in proc.stdout and "becomes it" in proc.stdout
    client = MlflowClient(tracking)
    (run,) = runs_of(client, name, "locenc")
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for key in ("best_val_top10", "final_val_top1", "final_val_top10", "final_val_loss", "rag_cos", "geo_knn_cos",
                "probe_mean_r2", "probe_r2_log1p_jobs", "rag_probe_mean_r2", "concat_mean_r2", "ring_mean_r2",
                "knn_latlon_mean_r2", "knn_latlon_r2_log1p_population", "map_pc1_share", "refit_train_loss", "val_top10"):
        assert key in m, key
    assert 0 <= m["best_val_top10"] <= 1 and m["records"] == 2093
    # the location embeddings of a learnable function of place carry real signal for jobs
    assert m["probe_r2_log1p_jobs"] > 0.1
    artifacts = {a.path for d in ("figures", "model", "tables") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"figures/locenc_map.png", "figures/locenc_map.html", "model/locenc.pt", "tables/locenc_res9.parquet",
            "tables/locrag_res9.parquet"} <= artifacts
    html = Path(client.download_artifacts(run.info.run_id, "figures/locenc_map.html", str(tmp_path / "dl"))).read_text()
    assert "<script src=\"https://cdn.plot.ly" not in html and len(html) > 1_000_000  # plotly.js inlined: opens offline
    probes = runs_of(client, name, "probe")
    assert len(probes) == 2 and all(p.data.tags["mlflow.parentRunId"] == run.info.run_id for p in probes)
    assert {"coords_res9"} <= {d.dataset.name for d in run.inputs.dataset_inputs}
    assert "location" not in run.data.params["inputs.modalities"]

    # registry: version 1, candidate and champion (the first), tags with the evidence
    mv = client.get_model_version_by_alias("urbanrepml-locenc-poa_locenc", "champion")
    assert str(mv.version) == "1"
    assert str(client.get_model_version_by_alias("urbanrepml-locenc-poa_locenc", "candidate").version) == "1"
    assert float(mv.tags["urbanrepml.locenc.val_top10"]) == pytest.approx(m["best_val_top10"], rel=1e-5)
    assert mv.tags["promote.decision"] == "promoted" and mv.tags["urbanrepml.locenc.split_digest"]

    # serving: lat/lon -> embedding, RAG vector with a bank; bad coordinates -> NaN; bad k -> clear error
    model = mlflow.pyfunc.load_model("models:/urbanrepml-locenc-poa_locenc@champion")
    query = pd.DataFrame({"lat": [-30.05, -30.02, 95.0], "lon": [-51.2, -51.18, -51.2]})
    out = model.predict(query)
    assert list(out.columns[:2]) == ["loc_0", "loc_1"] and out.shape == (3, 16 + 12)  # loc (16) + RAG of the 12 coords dims
    assert out.iloc[:2].notna().all().all() and out.iloc[2].isna().all()
    plain = model.predict(query, params={"rag": False})
    assert plain.shape == (3, 16) and np.allclose(plain.iloc[:2].to_numpy(), out.iloc[:2, :16].to_numpy())
    with pytest.raises(mlflow.exceptions.MlflowException, match="k must be between"):
        model.predict(query, params={"k": 5000})
    # the logged checkpoint reloads with every key and gives the served embedding exactly
    from urbanrepml.models.location.checkpoint import load

    ckpt = load(client.download_artifacts(run.info.run_id, "model/locenc.pt", str(tmp_path / "ck")))
    with torch.no_grad():
        mine = ckpt.embed_locations(torch.tensor([[-30.05, -51.2], [-30.02, -51.18]], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(mine, plain.iloc[:2].to_numpy(), rtol=1e-6, atol=1e-6)

    # the per-cell table is a contract table the probe stage reads unchanged
    from urbanrepml.stages.probe import run_probe_stage
    from urbanrepml.tables import read_table

    table_path = Path(client.download_artifacts(run.info.run_id, "tables/locenc_res9.parquet", str(tmp_path / "t")))
    assert read_table(table_path).frame.shape == (2093, 16)
    metrics = run_probe_stage(area, table=str(table_path), figures=False)
    assert metrics["mean_r2"] == pytest.approx(m["probe_mean_r2"])

    # the location modality (registered encoder) -> a per-cell table fusion can take
    from urbanrepml.modalities.location import LocationModality
    from urbanrepml.stages.modality import run_modality_stage

    loc = run_modality_stage(LocationModality("registered", rag=True, k=5), area, 9)
    assert loc.frame.shape == (2093, 16 + 12) and loc.meta.modality == "location"
    from urbanrepml.stages.fuse import Params as FuseParams
    from urbanrepml.stages.fuse import run_fuse_stage

    fused = run_fuse_stage(make(FuseParams, study_area=area, model="concat", register=False,
                                tables=f"coords={coords},location={loc.path}"))
    assert fused.frame.shape[1] == 12 + 28

    # locenc_embed: points and cells
    from urbanrepml.stages.locenc_embed import Params as EmbedParams
    from urbanrepml.stages.locenc_embed import run_locenc_embed_stage

    pd.DataFrame({"id": ["a", "b"], "lat": [-30.05, -30.02], "lon": [-51.2, -51.18]}).to_csv(tmp_path / "pts.csv", index=False)
    path = run_locenc_embed_stage(make(EmbedParams, study_area=area, points=str(tmp_path / "pts.csv"), rag=True, k=3))
    emb = pd.read_csv(path)
    assert list(emb.columns[:4]) == ["id", "lat", "lon", "loc_0"] and emb.shape == (2, 3 + 16 + 12)
    path = run_locenc_embed_stage(make(EmbedParams, study_area=area))
    assert read_table(path).frame.shape == (2093, 16)

    # the same run again: same split, same score -> a new candidate, the champion stays (a tie never moves it)
    from urbanrepml.stages.locenc import Params, run_locenc_stage

    args = dict(zip(SMALL[::2], SMALL[1::2], strict=True))
    _, version = run_locenc_stage(make(Params, study_area=area, probe=False, **{k.lstrip("-"): v for k, v in args.items()}))
    version = client.get_model_version(version.name, version.version)
    assert str(version.version) == "2" and version.tags["promote.decision"] == "kept"
    assert str(client.get_model_version_by_alias("urbanrepml-locenc-poa_locenc", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("urbanrepml-locenc-poa_locenc", "candidate").version) == "2"


def test_fuse_never_builds_the_location_modality_implicitly(tracking, tmp_path, capsys):
    from urbanrepml.config import load_study_area
    from urbanrepml.errors import UrbanReprError
    from urbanrepml.modalities.location import LocationModality
    from urbanrepml.stages.fuse import ensure_modality_tables

    spec = load_study_area(poa_area(tmp_path, "poa_locenc_implicit"))
    with pytest.raises(UrbanReprError, match="built only on request"):
        LocationModality().source_files(spec)
    assert ensure_modality_tables(spec, 9) == []
    assert "skipping modality location: location: built only on request" in capsys.readouterr().out


def _points_csv(path: Path, n: int, **overrides) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=["dim_0", "dim_1", "dim_2"])
    frame["geometry"] = [f"POINT ({-51.2 + 0.01 * i} {-30.05 + 0.005 * i})" for i in range(n)]
    for key, value in overrides.items():
        frame.loc[0, key] = value
    frame.to_csv(path, index=False)
    return path


def _nan_table(path: Path, area: str) -> Path:
    """A parquet table with the contract's metadata but a NaN (written around the validating writer)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from urbanrepml.config import load_study_area

    spec = load_study_area(area)
    built = build_area(spec, [9])
    frame, _ = to_embedding_frame(np.ones((len(built.cells(9)), 3)), built.region_ids(9), "coords")
    frame.iloc[5, 1] = np.nan
    meta = TableMeta(modality="coords", resolution=9, study_area=spec.name, prefix="coords")
    arrow = pa.Table.from_pandas(frame, preserve_index=True)
    pq.write_table(arrow.replace_schema_metadata({**arrow.schema.metadata, b"urbanrepml": json.dumps(meta.__dict__).encode()}),
                   path)
    return path


@pytest.mark.parametrize("case, message", [
    ("no_dims", "no embedding columns named dim_0"),
    ("bad_wkt", "malformed or non-POINT geometry"),
    ("out_of_range", "out of range"),
    ("bad_crs", "unknown CRS"),
    ("one_row", "needs at least 2"),
    ("k_too_large", "k must be between 1 and 4"),
    ("nan_table", "NaN or inf"),
    ("bad_sigmas", "sigmas must be positive numbers"),
])
def test_bad_input_is_one_line_exit_2_and_no_version(tracking, tmp_path, capsys, case, message):
    area = poa_area(tmp_path, "poa_locenc_bad")
    args = ["--study_area", area, *SMALL, "--input", str(tmp_path / "in.csv")]
    if case == "no_dims":
        frame = pd.read_csv(_points_csv(tmp_path / "in.csv", 5)).rename(columns={"dim_0": "x0", "dim_1": "x1", "dim_2": "x2"})
        frame.to_csv(tmp_path / "in.csv", index=False)
    elif case == "bad_wkt":
        _points_csv(tmp_path / "in.csv", 5, geometry="POINT (1 2")
    elif case == "out_of_range":
        _points_csv(tmp_path / "in.csv", 5, geometry="POINT (-51.2 -91)")
    elif case == "bad_crs":
        _points_csv(tmp_path / "in.csv", 5)
        args += ["--crs", "EPSG:999999"]
    elif case == "one_row":
        _points_csv(tmp_path / "in.csv", 1)
    elif case == "k_too_large":
        _points_csv(tmp_path / "in.csv", 5)
        args += ["--k", "10"]
    elif case == "nan_table":
        args[args.index("--input") + 1] = str(_nan_table(tmp_path / "nan.parquet", area))
    elif case == "bad_sigmas":
        _points_csv(tmp_path / "in.csv", 5)
        args += ["--sigmas", "0,4"]
    with pytest.raises(SystemExit) as exit_info:
        load_entry("locenc").main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    client = MlflowClient(tracking)
    assert client.search_model_versions("name = 'urbanrepml-locenc-poa_locenc_bad'") == []
    exp = client.get_experiment_by_name("urbanrepml-poa_locenc_bad")
    if exp is not None:
        assert not [r for r in client.search_runs([exp.experiment_id]) if r.info.status == "RUNNING"]


def test_bad_input_from_the_command_line(tracking, tmp_path):
    area = poa_area(tmp_path, "poa_locenc_cli")
    _points_csv(tmp_path / "in.csv", 5, geometry="POINT (-51.2 -91)")
    proc = subprocess.run([sys.executable, "-m", "urbanrepml", "locenc", "--study_area", area,
                           "--input", str(tmp_path / "in.csv")], capture_output=True, text=True, cwd=tmp_path,
                          env=clean_env(PYTHONPATH=str(REPO)), timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "out of range" in lines[0]
    proc = subprocess.run([sys.executable, "-m", "urbanrepml", "locenc_embed", "--study_area", area],
                          capture_output=True, text=True, cwd=tmp_path, env=clean_env(PYTHONPATH=str(REPO)), timeout=300)
    assert proc.returncode == 2 and "no registered model 'urbanrepml-locenc-" in proc.stderr
