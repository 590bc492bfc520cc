"""Location modality: a location encoder evaluated at the cell centres -> a per-cell table (``location_0..``).

Encoders (``encoder``):

- ``registered``: a trained regional encoder from the registry, ``model_uri`` (default
  ``models:/urbanrepml-locenc-<area>@champion``, else ``@candidate``; ``runs:/...`` works too),
  queried through its pyfunc model like any client would; with ``rag`` the table also holds the
  retrieved embeddings' combination (``k`` neighbours, a cell's own record excluded).
- ``geoclip``: GeoCLIP's pretrained global ``LocationEncoder`` (512-d; ``pip install --no-deps
  geoclip==1.3.0``), the baseline a regional encoder must beat.

It needs no file of the study area, so it is built only on request: ``LocationModality()``
without an ``encoder`` names no source (``source_files`` raises, and ``fuse``'s implicit build of
the area's modalities skips it); the entry point (``python -m urbanrepml location``) asks for
``encoder=registered`` by default. Its source files, logged with their digests, are the encoder's
weights (the registered model's TorchScript service, or GeoCLIP's weights file).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.areas import Area, h3ops
from urbanrepml.config import StudyArea
from urbanrepml.constants import CANDIDATE, CHAMPION, REGION_ID, registered_model_name
from urbanrepml.errors import UrbanReprError
from urbanrepml.modalities.base import Modality, ModalityResult
from urbanrepml.params import param

ENCODERS = ("registered", "geoclip")
SERVICE_FILE = "locenc_service.pt"


def _download_model(uri: str, dst: Path) -> Path | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except (MlflowException, OSError):
        return None


class LocationModality(Modality):
    """A location encoder at the cell centres (``location_0..``): a registered regional encoder or GeoCLIP."""

    name = "location"

    @dataclass
    class Params:
        """The ``location`` entry point's own settings."""

        encoder: str = param("registered", "registered (a trained locenc model) or geoclip (pretrained, global)",
                             choices=ENCODERS)
        model_uri: str | None = param(None, "registered encoder (default models:/urbanrepml-locenc-<area>@champion, "
                                            "else @candidate)")
        rag: bool = param(False, "registered encoder: append the retrieved embeddings' combination (RAG)")
        k: int = param(10, "RAG: neighbours retrieved")

    def __init__(self, encoder: str | None = None, model_uri: str | None = None, rag: bool = False, k: int = 10):
        if encoder and encoder not in ENCODERS:
            raise UrbanReprError(f"location: encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        if encoder == "geoclip" and (model_uri or rag):
            raise UrbanReprError("location: model_uri and rag apply to encoder=registered, not geoclip")
        if int(k) < 1:
            raise UrbanReprError(f"location: k must be >= 1, got {k}")
        self.encoder = encoder or ""
        self.model_uri = model_uri or ""
        self.rag = bool(rag)
        self.k = int(k)
        self._model: tuple[str, Path] | None = None

    def _registered(self, spec: StudyArea) -> tuple[str, Path]:
        """(URI, local model folder) of the registered encoder, downloaded once."""
        if self._model is not None:
            return self._model
        tmp = Path(tempfile.mkdtemp(prefix="urbanrepml-location-"))
        name = registered_model_name(spec.name, "locenc")
        uris = [self.model_uri] if self.model_uri else [f"models:/{name}@{CHAMPION}", f"models:/{name}@{CANDIDATE}"]
        for uri in uris:
            local = _download_model(uri, tmp / str(len(list(tmp.iterdir()))))
            if local is not None:
                self._model = (uri, local)
                return self._model
        if self.model_uri:
            raise UrbanReprError(f"location: cannot load location encoder {self.model_uri!r}; check the URI "
                                 "(models:/<name>@<alias>, models:/<name>/<version> or runs:/<run>/locenc_model)")
        raise UrbanReprError(f"location: no registered location encoder {name!r} with a @{CHAMPION} or @{CANDIDATE} alias; "
                             f"train one first (mlflow run . -e locenc -P study_area={spec.name}) or pass model_uri")

    def source_files(self, spec: StudyArea) -> dict[str, Path]:
        if not self.encoder:
            raise UrbanReprError("location: built only on request (no file of the study area is its source); "
                                 "run `mlflow run . -e location -P encoder=registered|geoclip`")
        if self.encoder == "geoclip":
            from urbanrepml.models.location.geoclip import geoclip_weights_path

            path = geoclip_weights_path()
            return {f"geoclip_{path.name}": path}
        uri, local = self._registered(spec)
        found = sorted(local.rglob(SERVICE_FILE)) or sorted(local.rglob("MLmodel"))
        return {f"{registered_model_name(spec.name, 'locenc')}.{found[0].name}": found[0]}

    def compute(self, spec: StudyArea, area: Area, resolution: int) -> ModalityResult:
        cells = area.cells(resolution)
        lat, lon = h3ops.cell_centroids(cells)
        ids = pd.Index(area.region_ids(resolution), name=REGION_ID)
        if self.encoder == "geoclip":
            from urbanrepml.models.location.geoclip import build_geoclip
            from urbanrepml.models.location.inference import encode

            values = encode(build_geoclip(), lat, lon)
            features = pd.DataFrame(values, index=ids, columns=[f"geoclip_{i}" for i in range(values.shape[1])])
            return ModalityResult(features, params={"encoder": "geoclip", "embedding_dim": values.shape[1]},
                                  notes=["encoder=geoclip (pretrained global GeoCLIP LocationEncoder)"])
        if not self.encoder:
            self.source_files(spec)
        import mlflow

        uri, local = self._registered(spec)
        model = mlflow.pyfunc.load_model(str(local))
        query = pd.DataFrame({"lat": lat, "lon": lon, "id": np.asarray(ids, dtype=object)})
        try:
            out = model.predict(query, params={"rag": self.rag, "k": self.k})
        except mlflow.exceptions.MlflowException as exc:
            raise UrbanReprError(f"location: {uri}: {str(exc).splitlines()[0]}") from None
        features = pd.DataFrame(out.to_numpy(dtype=np.float32), index=ids, columns=list(out.columns))
        return ModalityResult(features, params={"encoder": "registered", "model_uri": uri, "embedding_dim": features.shape[1]},
                              notes=[f"encoder=registered {uri}" + (f", with RAG (k={self.k})" if self.rag else "")])
