"""Tables and probe records are keyed by the files they came from: a changed source is never reused silently."""

from __future__ import annotations

import os
from typing import ClassVar

import pytest
from mlflow.tracking import MlflowClient

from urbanrepml.errors import UrbanReprError
from urbanrepml.tracking.promotion import Evidence, decide, has_probe_record

AMSTERDAM_BOX = "[4.8906, 52.3657, 4.9037, 52.3737]"


def _other_pbf(src, dst) -> None:
    """A valid PBF of the same place with other content: every other amenity node dropped."""
    import osmium

    class Drop(osmium.SimpleHandler):
        def __init__(self, writer):
            super().__init__()
            self.writer, self.i = writer, 0

        def node(self, n):
            self.i += 1
            if "amenity" not in n.tags or self.i % 2 == 0:
                self.writer.add_node(n)

        def way(self, w):
            self.writer.add_way(w)

        def relation(self, r):
            self.writer.add_relation(r)

    writer = osmium.SimpleWriter(str(dst))
    Drop(writer).apply_file(str(src))
    writer.close()


def test_fuse_rebuilds_a_modality_whose_source_file_changed(tracking, tmp_path, capsys):
    """Same study-area name, `osm` pointed at another PBF: fuse rebuilds poi instead of fusing the old table."""
    from urbanrepml.datasets import fetch
    from urbanrepml.modalities import PoiModality, current_sources_digests
    from urbanrepml.stages.fuse import Params, run_fuse_stage
    from urbanrepml.stages.modality import run_modality_stage
    from urbanrepml.tracking.fusion import store_tables

    name = f"swap_{os.getpid()}"
    original = fetch("amsterdam") / "amsterdam_centre.osm.pbf"
    _other_pbf(original, tmp_path / "other.osm.pbf")
    toml = tmp_path / "area.toml"
    toml.write_text(f'name = "{name}"\nboundary = {AMSTERDAM_BOX}\n[sources]\nosm = "{original}"\n')
    old = run_modality_stage(PoiModality(), str(toml), 9)
    old_run = old.meta.producer_run_id

    toml.write_text(f'name = "{name}"\nboundary = {AMSTERDAM_BOX}\n[sources]\nosm = "other.osm.pbf"\n')
    from urbanrepml.config import load_study_area

    now = current_sources_digests(load_study_area(toml))
    with pytest.raises(UrbanReprError, match=rf"the poi table of study area '{name}' at resolution 9 \(run {old_run}\) "
                                             "was built from other source files than the study area names now"):
        store_tables(name, 9, sources=now)  # what probe and tune see: a clear refusal, never the old table

    capsys.readouterr()
    table = run_fuse_stage(Params(study_area=str(toml), model="concat", register=False))
    out = capsys.readouterr().out
    assert f"fuse: rebuilding modality poi: its newest table (run {old_run}) was built from other source files" in out
    client = MlflowClient(tracking)
    fuse = client.get_run(table.meta.producer_run_id)
    new_run = fuse.data.params["inputs.poi.run_id"]
    assert new_run != old_run and fuse.data.params["inputs.modalities"] == "poi"
    new = client.get_run(new_run)
    assert new.data.tags["urbanrepml.sources_digest"] == now["poi"] != client.get_run(old_run).data.tags["urbanrepml.sources_digest"]
    assert new.data.tags["mlflow.parentRunId"] == fuse.info.run_id
    assert new.data.metrics["poi_tag_total"] < client.get_run(old_run).data.metrics["poi_tag_total"]


def test_probe_evidence_on_other_target_files_is_not_compared():
    """A record counts only on the current target files; a champion is compared only on identical evidence."""
    class Rec:
        tags: ClassVar[dict] = {"probe.run_id": "r", "probe.folds_digest": "d", "probe.mean_r2": "0.3", "probe.cv": "spatial",
                "probe.block_resolution": "7", "probe.folds": "5", "probe.seed": "0", "probe.targets_digest": "t1"}

    assert has_probe_record(Rec(), targets_digest="t1") and not has_probe_record(Rec(), targets_digest="t2")

    def e(version, value, targets):
        return Evidence(version, value, {"concat": 0.1, "ring": 0.2}, f"run{version}", "same-folds", None, targets)

    d = decide({"1": e("1", 0.5, "t1"), "2": e("2", 0.9, "t2")}, "1", "mean_r2", 0.0)
    assert not d.promote and d.decision == "rejected" and "scored on other targets" in d.reason
    assert decide({"1": e("1", 0.5, "t1"), "2": e("2", 0.9, "t1")}, "1", "mean_r2", 0.0).promote
