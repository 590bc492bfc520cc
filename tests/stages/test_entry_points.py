"""Every entry point of MLproject, run end to end as ``python -m urbanrepml <name>`` on the tiny ``poa_tiny`` area.

One recipe per entry point: the cheapest real parameters, and a check that the run it made FINISHED and
that its main artefact exists (a table, a registered version, a metric). ``probe``, ``cluster``,
``promote``, ``tune`` and ``pipeline`` run after one ``fuse`` per module (the ``fused_rig`` fixture),
whose run is also what the ``fuse`` recipe checks. An entry point without a recipe fails: add one below.
The area and its generated files live in ``tests/data/poa_tiny`` (``python -m tests.data.make_fixtures``).
"""

from __future__ import annotations

import filecmp
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from tests.support import TEST_DATA
from urbanrepml.stages import ENTRY_POINTS

POA_TINY = TEST_DATA / "poa_tiny"


@dataclass(frozen=True)
class Recipe:
    """How to run one entry point and what it must leave behind.

    ``args(rig)``: the command line after ``python -m urbanrepml <name>`` (None: the ``fused_rig`` fixture's fuse
    is the run); ``stage`` and ``tags``: the one new run it must make (None: it makes no run); ``check(rig, run)``:
    its main artefact; ``after_fuse``: it needs a registered version first.
    """

    args: Callable | None
    stage: str | None
    check: Callable
    tags: dict | None = None
    after_fuse: bool = False


def _artifacts(rig, run, folder: str) -> set[str]:
    return {a.path for a in rig.client().list_artifacts(run.info.run_id, folder)}


def _modality(name: str, *extra: str, area: str | None = None) -> Recipe:
    """A modality on ``poa_tiny`` (or the study area TOML ``area``) at resolution 9: its table, cells with data."""

    def check(rig, run):
        assert f"tables/{name}_res9.parquet" in _artifacts(rig, run, "tables")
        assert run.data.metrics["cells_with_data"] > 0

    return Recipe(lambda rig: ["--study_area", area or rig.study_area, "--resolution", "9", *extra], "modality", check,
                  tags={"modality": name})


def _check_area(rig, run):
    assert run.data.metrics["cells_res9"] == 274
    assert "area/cells_res9.parquet" in _artifacts(rig, run, "area")


def _check_fuse(rig, run):
    assert "tables/fused_res9.parquet" in _artifacts(rig, run, "tables")
    versions = rig.client().search_model_versions(f"name = '{rig.experiment}'")
    assert run.info.run_id in {v.run_id for v in versions}


def _check_probe(rig, run):
    assert np.isfinite(run.data.metrics["mean_r2"]) and "baseline_ring_mean_r2" in run.data.metrics
    assert "probe/metrics_by_target.csv" in _artifacts(rig, run, "probe")


def _check_cluster(rig, run):
    assert "cluster/labels_res9.parquet" in _artifacts(rig, run, "cluster")
    assert run.data.metrics["best_k_res9"] in (2, 3)


def _check_tune(rig, run):
    assert run.data.metrics["trials_finished"] == 1 and np.isfinite(run.data.metrics["best_score"])


def _check_promote(rig, run):
    assert run.data.tags["urbanrepml.decision"] in ("promoted", "rejected", "kept")
    best = rig.client().get_model_version(rig.experiment, run.data.tags["urbanrepml.best_version"])
    assert best.tags["promote.decision"]


def _check_pipeline(rig, run):
    assert {"summary/pipeline_summary.md", "summary/pipeline_summary.csv"} <= _artifacts(rig, run, "summary")


def _check_images(rig, run):
    assert run.data.metrics["images"] == 3 and run.data.metrics["groups"] == 1  # the three Berlin Cathedral photos


def _check_embed_images(rig, run):
    assert run.data.metrics["images"] == 3 and run.data.metrics["embed_dim"] == 64


def _check_locenc(rig, run):
    versions = rig.client().search_model_versions(f"name = 'urbanrepml-locenc-{rig.area_name}'")
    assert run.info.run_id in {v.run_id for v in versions} and "val_top10" in run.data.metrics


LOCENC_ARGS = ["--epochs", "2", "--probe", "false", "--compare_geoclip", "false", "--map_size", "16", "--batch_size", "64"]


def _encoder_registered(rig) -> list[str]:
    """Train and register a location encoder when the rig has none yet (locenc_embed needs one)."""
    if not rig.client().search_model_versions(f"name = 'urbanrepml-locenc-{rig.area_name}'"):
        proc = rig.run("locenc", "--study_area", rig.study_area, *LOCENC_ARGS)
        assert proc.returncode == 0, proc.stderr[-4000:]
    return ["--study_area", rig.study_area]


def _check_locenc_embed(rig, run):
    assert run.data.metrics["rows"] > 0 and run.data.metrics["dims"] > 0


def _check_datasets(rig, proc):
    from urbanrepml.datasets import list_datasets

    listed = [line.split()[0] for line in proc.stdout.splitlines()[1:] if line.split()]
    assert set(list_datasets()) <= set(listed), proc.stdout



GEOLOC_ARGS = ["--dataset", "opensfm_lund", "--kind", "photos", "--split", "segments", "--segment_size", "4",
               "--ratios", "0.5,0.25,0.25", "--resolution", "12", "--model", "geoloc_head", "--encoder", "small_cnn",
               "--encoder_input_size", "32", "--hidden", "0", "--epochs", "2", "--knn_k", "3"]


def _check_geolocate(rig, run):
    versions = rig.client().search_model_versions("name = 'urbanrepml-geoloc-opensfm_lund'")
    assert run.info.run_id in {v.run_id for v in versions} and "test_median_km" in run.data.metrics


def _geolocator_registered(rig) -> list[str]:
    """Train and register a Lund geolocator when the rig has none yet (geolocate_eval needs one)."""
    if not rig.client().search_model_versions("name = 'urbanrepml-geoloc-opensfm_lund'"):
        proc = rig.run("geolocate", *GEOLOC_ARGS)
        assert proc.returncode == 0, proc.stderr[-4000:]
    return ["--dataset", "opensfm_lund", "--split_method", "segments", "--segment_size", "4", "--ratios", "0.5,0.25,0.25"]


def _check_geolocate_eval(rig, run):
    assert run.data.metrics["images"] > 0 and "test_median_km" in run.data.metrics


def _place_scenes(rig) -> str:
    """Three generated yearly 4-band scenes of one place, indexed as 8 px chips (``tinyscenes``) once per rig."""
    from tests.data.images.make import write_scene

    folder = rig.cwd / "place_scenes"
    if not folder.is_dir():
        rng = np.random.default_rng(0)
        base = rng.uniform(30, 220, size=(4, 32, 32))
        for year in (2018, 2019, 2020):
            write_scene(folder / f"s_{year}0701.tif",
                        np.clip(base * rng.uniform(0.8, 1.2) + rng.normal(0, 12, base.shape), 1, 255).astype(np.uint8))
        proc = rig.run("images", "--dataset", str(folder), "--kind", "chips", "--chip_px", "8", "--name", "tinyscenes")
        assert proc.returncode == 0, proc.stderr[-4000:]
    return "tinyscenes"


def _check_difficulty(rig, run):
    assert run.data.metrics["identities"] == 16 and "band_2_distance" in run.data.metrics
    assert "difficulty/bands.parquet" in _artifacts(rig, run, "difficulty")


def _check_placeemb(rig, run):
    versions = rig.client().search_model_versions("name = 'urbanrepml-placeemb-tinyscenes'")
    assert run.info.run_id in {v.run_id for v in versions} and "test_recall_1" in run.data.metrics


PLACEEMB_ARGS = ["--epochs", "2", "--size", "8", "--width", "8", "--out_dim", "16", "--batch_size", "16", "--n_bands", "3",
                 "--neighbours", "9", "--split", "identity", "--k", "2", "--baseline", "false"]


RECIPES: dict[str, Recipe] = {
    "area": Recipe(lambda rig: ["--study_area", rig.study_area, "--resolutions", "8,9"], "area", _check_area),
    "poi": _modality("poi"),
    "roads": _modality("roads"),
    "gtfs": _modality("gtfs"),
    "raster": _modality("raster"),
    # poa_tiny_imagery (imagery.toml) names alphaearth.tif and tiles/: tables of a few cells, kept out of poa_tiny's fusions
    "alphaearth": _modality("alphaearth", "--source", "local", area=str(POA_TINY / "imagery.toml")),
    "aerial": _modality("aerial", "--tile_px", "16", area=str(POA_TINY / "imagery.toml")),
    "fuse": Recipe(None, "fuse", _check_fuse, after_fuse=True),
    "probe": Recipe(lambda rig: ["--study_area", rig.study_area], "probe", _check_probe, after_fuse=True),
    "cluster": Recipe(lambda rig: ["--study_area", rig.study_area, "--k_min", "2", "--k_max", "3"], "cluster", _check_cluster,
                      after_fuse=True),
    "tune": Recipe(lambda rig: ["--study_area", rig.study_area, "--n_trials", "1", "--max_epochs", "2", "--models", "ring"],
                   "tune", _check_tune, after_fuse=True),
    "promote": Recipe(lambda rig: ["--study_area", rig.study_area], "promote", _check_promote, after_fuse=True),
    "pipeline": Recipe(lambda rig: ["--study_area", rig.study_area, "--epochs", "2"], "pipeline", _check_pipeline,
                       after_fuse=True),
    "datasets": Recipe(lambda rig: ["--command", "list"], None, _check_datasets),
    "images": Recipe(lambda rig: ["--dataset", "opensfm_berlin", "--kind", "photos"], "images", _check_images),
    "embed_images": Recipe(lambda rig: ["--dataset", "opensfm_berlin", "--encoder", "small_cnn"], "embed_images",
                           _check_embed_images),
    "location": _modality("location", "--encoder", "geoclip"),
    "locenc": Recipe(lambda rig: ["--study_area", rig.study_area, *LOCENC_ARGS], "locenc", _check_locenc, after_fuse=True),
    "locenc_embed": Recipe(_encoder_registered, "locenc_embed", _check_locenc_embed, after_fuse=True),
    "geolocate": Recipe(lambda rig: GEOLOC_ARGS, "geolocate", _check_geolocate),
    "geolocate_eval": Recipe(_geolocator_registered, "geolocate_eval", _check_geolocate_eval),
    # place and building embeddings
    "difficulty": Recipe(lambda rig: ["--dataset", _place_scenes(rig), "--n_bands", "3", "--neighbours", "9"], "difficulty",
                         _check_difficulty),
    "placeemb": Recipe(lambda rig: ["--dataset", _place_scenes(rig), *PLACEEMB_ARGS], "placeemb", _check_placeemb),
}


# ---- concept-aware geolocation: a tiny generated concept dataset in the rig's folder
CONCEPT_FAST = ["--dataset", "tinyc", "--min_samples_per_cell", "10"]
CONCEPT_ENCODER = ["--encoder", "small_cnn", "--input_size", "32", "--trainable_blocks", "1", "--location_encoder", "rff"]


def _concepts_args(rig) -> list[str]:
    from tests.support.concept_images import write_concept_csv

    return ["--name", "tinyc", "--naip", "", "--photos", str(write_concept_csv(rig.cwd / "concept_images"))]


def _concept_dataset(rig) -> None:
    if not (rig.cwd / "data" / "images" / "tinyc" / "index.parquet").is_file():
        proc = rig.run("concepts", *_concepts_args(rig))
        assert proc.returncode == 0, proc.stderr[-4000:]


def _latest_run(rig, stage: str) -> str:
    client = rig.client()
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, f"tags.`urbanrepml.stage` = '{stage}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id


def _concept_stage0_args(rig) -> list[str]:
    _concept_dataset(rig)
    return [*CONCEPT_FAST, *CONCEPT_ENCODER, "--epochs", "1"]


def _concept_stage1_args(rig) -> list[str]:
    _concept_dataset(rig)
    try:
        stage0 = _latest_run(rig, "concept_stage0")
    except IndexError:
        assert rig.run("concept_stage0", *_concept_stage0_args(rig)).returncode == 0
        stage0 = _latest_run(rig, "concept_stage0")
    return [*CONCEPT_FAST, "--stage0", stage0, "--epochs", "1"]


def _concept_stage2_args(rig) -> list[str]:
    try:
        stage1 = _latest_run(rig, "concept_stage1")
    except IndexError:
        assert rig.run("concept_stage1", *_concept_stage1_args(rig)).returncode == 0
        stage1 = _latest_run(rig, "concept_stage1")
    return [*CONCEPT_FAST, "--stage1", stage1, "--epochs", "1", "--figures", "2"]


def _check_concepts(rig, run):
    assert run.data.metrics["images"] == 48 and run.data.metrics["meta_concepts"] == 3


def _check_concept_stage0(rig, run):
    assert np.isfinite(run.data.metrics["best_val_loss"])


def _check_concept_stage1(rig, run):
    assert 0 <= run.data.metrics["test_meta_top1"] <= 1


def _check_concept_stage2(rig, run):
    versions = rig.client().search_model_versions("name = 'urbanrepml-conceptgeo-tinyc'")
    assert run.info.run_id in {v.run_id for v in versions} and "image_only_test_median_km" in run.data.metrics


def _check_concept_pipeline(rig, run):
    assert run.data.tags["urbanrepml.stage2_run"] and "both_test_median_km" in run.data.metrics


RECIPES.update({
    "concepts": Recipe(_concepts_args, "concepts", _check_concepts),
    "concept_stage0": Recipe(_concept_stage0_args, "concept_stage0", _check_concept_stage0),
    "concept_stage1": Recipe(_concept_stage1_args, "concept_stage1", _check_concept_stage1),
    "concept_stage2": Recipe(_concept_stage2_args, "concept_stage2", _check_concept_stage2),
    "concept_pipeline": Recipe(lambda rig: [*CONCEPT_FAST, *CONCEPT_ENCODER, "--epochs0", "1", "--epochs1", "1", "--epochs2", "1"]
                               if _concept_dataset(rig) is None else [], "concept_pipeline", _check_concept_pipeline),
})


def _missing_recipes() -> list[str]:
    return [name for name in ENTRY_POINTS if name not in RECIPES]


def test_every_entry_point_has_a_recipe():
    """Fails fast (without running anything) when an entry point was added without a recipe here."""
    assert not _missing_recipes(), "add a recipe for " + ", ".join(_missing_recipes()) + " to RECIPES in " + __file__
    assert set(RECIPES) <= set(ENTRY_POINTS), f"recipes for entry points that no longer exist: {set(RECIPES) - set(ENTRY_POINTS)}"


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_entry_point_end_to_end(name, request):
    recipe = RECIPES.get(name)
    if recipe is None:
        pytest.fail(f"add a recipe for {name} to RECIPES in {__file__} (its cheapest real parameters and main artefact)",
                    pytrace=False)
    if recipe.after_fuse:
        rig, fuse_proc, fuse_runs = request.getfixturevalue("fused_rig")
    else:
        rig = request.getfixturevalue("entry_point_rig")
    if recipe.args is None:  # the module's fuse is the run under test
        proc, new = fuse_proc, fuse_runs
    else:
        before = rig.run_ids()
        proc = rig.run(name, *recipe.args(rig))
        assert proc.returncode == 0, proc.stderr[-4000:]
        new = rig.run_ids() - before
    if recipe.stage is None:
        assert not new, f"{name} made runs: {new}"
        recipe.check(rig, proc)
        return
    client = rig.client()
    wanted = {"urbanrepml.stage": recipe.stage, **{f"urbanrepml.{k}": v for k, v in (recipe.tags or {}).items()}}
    runs = [client.get_run(r) for r in new]
    (run,) = [r for r in runs if all(r.data.tags.get(k) == v for k, v in wanted.items())]
    assert run.info.status == "FINISHED"
    recipe.check(rig, run)


def test_fixture_files_are_what_make_fixtures_makes(tmp_path):
    """The committed ``tests/data/poa_tiny`` equals a fresh run of ``tests/data/make_fixtures.py``."""
    import rasterio
    from PIL import Image

    from tests.data.make_fixtures import make_poa_tiny

    fresh = make_poa_tiny(tmp_path / "poa_tiny")
    assert (fresh / "study_area.toml").read_text() == (POA_TINY / "study_area.toml").read_text()
    with rasterio.open(fresh / "alphaearth.tif") as a, rasterio.open(POA_TINY / "alphaearth.tif") as b:
        assert (a.count, a.dtypes, a.nodata, a.transform, a.crs) == (b.count, b.dtypes, b.nodata, b.transform, b.crs)
        np.testing.assert_array_equal(a.read(), b.read())
    names = sorted(p.name for p in (fresh / "tiles").iterdir())
    assert names == sorted(p.name for p in (POA_TINY / "tiles").iterdir()) and len(names) == 7
    for n in names:
        np.testing.assert_array_equal(np.asarray(Image.open(fresh / "tiles" / n)), np.asarray(Image.open(POA_TINY / "tiles" / n)))
    assert not filecmp.dircmp(fresh, POA_TINY).left_only and not filecmp.dircmp(fresh, POA_TINY).right_only
