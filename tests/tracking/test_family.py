"""The shared registry policy of every model family: register a finished run's model, promote by metric and split."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from urbanrepml.constants import CANDIDATE, CHAMPION
from urbanrepml.errors import UrbanReprError
from urbanrepml.tracking.family import ModelFamily, family_metadata, promote_version, register_run_model, require_family, resolve_family_uri
from urbanrepml.tracking.registry import get_version_by_alias

KM = ModelFamily(name="testgeo", metric="test_median_km", higher_is_better=False, what="Test geolocators of {scope!r}",
                 train_hint="mlflow run . -e geolocate -P dataset={scope}")
OTHER = ModelFamily(name="otherfam", metric="val_recall_at_1", higher_is_better=True, what="x", train_hint="y")


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"v": [1.0] * len(model_input)})


def _run_with_model(family: ModelFamily | None = KM, fail: bool = False) -> str:
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=Constant(),
                                metadata=family_metadata(family, dim=1) if family else None)
        if fail:
            mlflow.end_run("FAILED")
    return run.info.run_id


def _version(run_id: str, value: float, split: str = "s1"):
    return register_run_model(KM, run_id, "poa", artifact_path="model", tags={KM.metric_tag: value, KM.split_tag: split})


def test_lower_is_better_promotion_margin_and_split(tracking):
    v1 = _version(_run_with_model(), 1.30)
    assert v1.name == "urbanrepml-testgeo-poa" and v1.aliases == [CANDIDATE]
    d1 = promote_version(KM, v1)
    assert d1.promoted and "becomes it" in d1.reason
    # 1.25 km is better by 0.05 but the margin asks for 0.1: kept.
    v2 = _version(_run_with_model(), 1.25)
    d2 = promote_version(KM, v2, min_gain=0.1)
    assert not d2.promoted and get_version_by_alias(v1.name, CHAMPION).version == v1.version
    # 0.9 km beats it by 0.4: promoted; a tie does not move it back.
    v3 = _version(_run_with_model(), 0.9)
    assert promote_version(KM, v3, min_gain=0.1).promoted
    v4 = _version(_run_with_model(), 0.9)
    assert not promote_version(KM, v4).promoted
    # A far better score on another split is not comparable.
    v5 = _version(_run_with_model(), 0.1, split="s2")
    d5 = promote_version(KM, v5)
    assert not d5.promoted and "not comparable" in d5.reason
    champ = get_version_by_alias(v1.name, CHAMPION)
    assert champ.version == v3.version and champ.tags["promote.decision"] == "promoted"
    assert resolve_family_uri(KM, "poa")[0] == "models:/urbanrepml-testgeo-poa@champion"


def test_failed_run_registers_nothing_and_family_is_checked(tracking):
    failed = _run_with_model(fail=True)
    with pytest.raises(UrbanReprError, match="not FINISHED"):
        register_run_model(KM, failed, "fail", artifact_path="model", tags={KM.metric_tag: 1.0})
    with pytest.raises(UrbanReprError, match="no registered model 'urbanrepml-testgeo-fail'.*mlflow run . -e geolocate"):
        resolve_family_uri(KM, "fail")
    run_id = _run_with_model(OTHER)
    uri = f"runs:/{run_id}/model"
    with pytest.raises(UrbanReprError, match="is a 'otherfam' model, not a testgeo model"):
        require_family(uri, KM)
    assert require_family(uri, OTHER)["dim"] == 1
    plain = _run_with_model(None)
    with pytest.raises(UrbanReprError, match="not a urbanrepml model of any family"):
        require_family(f"runs:/{plain}/model", KM)
