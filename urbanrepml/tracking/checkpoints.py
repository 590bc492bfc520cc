"""MLflow side of the training loop: batched epoch metrics, checkpoints as artifacts, resuming a run.

- :class:`TrialHooks` wraps them for one Optuna trial (report a metric per epoch, prune).
- :class:`MlflowTrainHooks` implements the loop's hooks (``epoch_end``, ``best``,
  ``checkpoint``, ``flush``; see ``urbanrepml.training.hooks``) for any task without
  importing the loop. It buffers per-epoch metrics and writes them with one
  ``log_batch`` call per flush (every ``flush_seconds``, before every checkpoint
  and at the end), each value with ``step = epoch``. Steps the run already holds (a
  resumed run redoing epochs after its last checkpoint) are skipped, so no step is
  logged twice.
- Checkpoints are ``checkpoints/epoch_<NNNN>.pt`` (the loop's full training state)
  and ``checkpoints/best.pt`` (the best weights by the monitored metric), saved with
  ``torch.save`` and read back with ``torch.load(weights_only=True)``.
- :func:`resume_checks` validates a ``resume_run_id`` (exists, is a fuse run of
  the same model and study area) and :func:`load_latest_checkpoint` reads its
  newest checkpoint, both failing with one line before any run is touched.
- :func:`fuse_run` starts the run (system metrics on), or re-opens the SAME run
  when resuming (``mlflow.start_run(run_id=...)``).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from urbanrepml.errors import UrbanReprError
from urbanrepml.tracking.runs import configure_tracking, ending_run, log_new_params, stage_run, tag
from urbanrepml.tracking.stale import process_tags

CHECKPOINT_DIR = "checkpoints"
BEST_NAME = "best.pt"
_EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt$")
_BATCH_LIMIT = 1000  # MLflow accepts at most 1000 metrics per log_batch


def checkpoint_artifact(epoch: int) -> str:
    return f"{CHECKPOINT_DIR}/epoch_{epoch:04d}.pt"


def _save_artifact(obj: dict, name: str) -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        torch.save(obj, path)
        mlflow.log_artifact(str(path), artifact_path=CHECKPOINT_DIR)


class MlflowTrainHooks:
    """Training-loop hooks writing to the run ``run_id`` (see the module docstring).

    Args:
        run_id: the run to log to.
        flush_seconds: longest time metrics wait in the buffer.
        log_best: also save ``checkpoints/best.pt`` whenever the monitored metric improves.
    """

    def __init__(self, run_id: str, flush_seconds: float = 15.0, log_best: bool = True):
        self.run_id = run_id
        self.client = MlflowClient()
        self.flush_seconds = flush_seconds
        self.log_best = log_best
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self._logged: dict[str, set[int]] = {}
        run = self.client.get_run(run_id)
        for key in run.data.metrics:  # steps already there (resumed run)
            self._logged[key] = {m.step for m in self.client.get_metric_history(run_id, key)}

    def epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if epoch in self._logged.get(key, ()):
                continue
            self._buffer.append(Metric(key, float(value), now, int(epoch)))
            self._logged.setdefault(key, set()).add(int(epoch))
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self._buffer), _BATCH_LIMIT):
            self.client.log_batch(self.run_id, metrics=self._buffer[i:i + _BATCH_LIMIT])
        self._buffer = []
        self._last_flush = time.monotonic()

    def checkpoint(self, state: dict, epoch: int) -> None:
        self.flush()
        _save_artifact(state, Path(checkpoint_artifact(epoch)).name)

    def best(self, state: dict, epoch: int) -> None:
        if self.log_best:
            _save_artifact(state, BEST_NAME)


class TrialHooks:
    """Hooks of one Optuna trial's training: epoch metrics to its run, ``metric`` reported, pruned on request.

    Epoch metrics go to the trial's run ``run_id`` (no checkpoints); ``metric`` is reported to ``trial`` (an
    ``optuna.Trial``) every epoch, and ``optuna.TrialPruned`` is raised, metrics flushed first, when the
    study's pruner says so.
    """

    def __init__(self, trial, run_id: str, metric: str):
        self.trial, self.metric = trial, metric
        self.inner = MlflowTrainHooks(run_id, log_best=False)

    def epoch_end(self, epoch, metrics):
        self.inner.epoch_end(epoch, metrics)
        self.trial.report(float(metrics[self.metric]), epoch)
        if self.trial.should_prune():
            import optuna

            self.inner.flush()
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    def best(self, state, epoch): ...

    def checkpoint(self, state, epoch): ...

    def flush(self):
        self.inner.flush()


def resume_checks(run_id: str, study_area: str, model: str):
    """The run to resume, after checking it is a fuse run of ``model`` on ``study_area``; else one clear line."""
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UrbanReprError(f"resume_run_id {run_id!r}: no such run in the tracking store; "
                             "pass the id of a killed fuse run, or leave resume_run_id empty") from None
    tags = run.data.tags
    if tags.get(tag("stage")) != "fuse":
        raise UrbanReprError(f"resume_run_id {run_id}: not a fuse run (stage {tags.get(tag('stage'))!r}); "
                             "pass the id of a fuse run")
    if tags.get(tag("model")) != model:
        raise UrbanReprError(f"resume_run_id {run_id}: that run trains model {tags.get(tag('model'))!r}, not {model!r}; "
                             f"resume with -P model={tags.get(tag('model'))}")
    if tags.get(tag("study_area")) != study_area:
        raise UrbanReprError(f"resume_run_id {run_id}: that run is on study area {tags.get(tag('study_area'))!r}, "
                             f"not {study_area!r}")
    if run.info.status == "FINISHED" and tags.get(tag("completed")) == "true":
        raise UrbanReprError(f"resume_run_id {run_id}: that run already finished; nothing to resume")
    return run


def resume_tables(run_id: str, resolution: int, dst_dir) -> dict[str, Path]:
    """The modality tables the fuse run ``run_id`` started from, downloaded from their producer runs."""
    from urbanrepml.tracking.tables import table_artifact_path

    params = MlflowClient().get_run(run_id).data.params
    tables: dict[str, Path] = {}
    for m in filter(None, params.get("inputs.modalities", "").split(",")):
        producer = params.get(f"inputs.{m}.run_id", "none")
        if producer == "none":
            raise UrbanReprError(f"resume_run_id {run_id}: its {m} table was given as a file, not found in the store; "
                                 "resume with the same -P tables=...")
        try:
            local = mlflow.artifacts.download_artifacts(run_id=producer, artifact_path=table_artifact_path(m, resolution),
                                                        dst_path=str(Path(dst_dir) / m))
        except MlflowException:
            raise UrbanReprError(f"resume_run_id {run_id}: the {m} table of run {producer} is gone; start a new fuse run") from None
        tables[m] = Path(local)
    return tables


def check_resume_inputs(run_id: str, digests: dict[str, str]) -> None:
    """Refuse to resume ``run_id`` on inputs other than the ones it started with (by table digest)."""
    params = MlflowClient().get_run(run_id).data.params
    before = {k.split(".")[1]: v for k, v in params.items() if k.startswith("inputs.") and k.endswith(".sha256")}
    now = {m: d[:16] for m, d in digests.items()}
    changed = sorted(m for m in before.keys() | now.keys() if before.get(m) != now.get(m))
    if changed:
        raise UrbanReprError(f"resume_run_id {run_id}: its input tables changed ({', '.join(changed)}); "
                             "resume on the same tables or start a new fuse run")


def latest_checkpoint(run_id: str) -> tuple[str, int] | None:
    """(artifact path, epoch) of the newest ``checkpoints/epoch_*.pt`` of a run, or None."""
    client = MlflowClient()
    best: tuple[str, int] | None = None
    for item in client.list_artifacts(run_id, CHECKPOINT_DIR):
        m = _EPOCH_FILE.search(item.path)
        if m and (best is None or int(m.group(1)) > best[1]):
            best = (item.path, int(m.group(1)))
    return best


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No artifact progress bar on stderr (errors stay one line)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def load_latest_checkpoint(run_id: str, map_location="cpu") -> dict:
    """Download and read the newest checkpoint of ``run_id``; a missing or unreadable one is one clear line."""
    import torch

    found = latest_checkpoint(run_id)
    if found is None:
        raise UrbanReprError(f"resume_run_id {run_id}: the run has no checkpoint under '{CHECKPOINT_DIR}/' "
                             "(it was killed before the first one); start a new run")
    artifact, _ = found
    with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp)
        try:
            state = torch.load(local, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling/zip error means a corrupt file
            raise UrbanReprError(
                f"checkpoint {artifact} of run {run_id} is corrupt or unreadable ({type(exc).__name__}); "
                "start a new run without resume_run_id"
            ) from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise UrbanReprError(f"checkpoint {artifact} of run {run_id} is not a urbanrepml training checkpoint")
    return state


@contextlib.contextmanager
def fuse_run(study_area: str, *, params: Mapping[str, object], tags: Mapping[str, object],
             resume_run_id: str | None = None, run_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """The fuse stage's run, with system metrics; ``resume_run_id`` re-opens that run instead of starting one.

    Under ``mlflow run`` with ``resume_run_id``, the run the CLI created is tagged
    ``urbanrepml.resumed_into=<id>`` and left with nothing else in it.
    """
    mlflow.enable_system_metrics_logging()
    if not resume_run_id:
        with stage_run("fuse", study_area, tags=tags, run_name=run_name) as run:
            log_new_params(params)
            yield run
        return
    configure_tracking()
    cli_run = os.environ.get("MLFLOW_RUN_ID")
    if cli_run and cli_run != resume_run_id:
        MlflowClient().set_tag(cli_run, tag("resumed_into"), resume_run_id)
        MlflowClient().set_tag(cli_run, "mlflow.note.content", f"resume of run {resume_run_id}; see that run")
    run = mlflow.start_run(run_id=resume_run_id, log_system_metrics=True)
    mlflow.set_tags(process_tags())  # the process that now runs it (runs close-stale reads these)
    with ending_run():
        yield run
