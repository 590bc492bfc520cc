"""Tracking URI resolution and the run context every stage uses.

Tracking URI: ``$MLFLOW_TRACKING_URI`` if set, else an embedded SQLite store
``mlflow.db`` in the working directory (the same default as MLflow 3 itself, so
``mlflow ui`` in that folder shows the runs).

Runs are tagged ``urbanrepml.stage``, ``urbanrepml.study_area`` and whatever the
stage adds (``urbanrepml.modality``, ``urbanrepml.model``, ``urbanrepml.resolution``).
Under ``mlflow run`` the CLI has already created the run (``MLFLOW_RUN_ID``), and
:func:`stage_run` attaches to it; run directly, the run goes to the experiment
``urbanrepml-<study_area>``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow

from urbanrepml.constants import TAG_PREFIX, experiment_name, tag  # noqa: F401 - re-exported
from urbanrepml.tracking.stale import process_tags
from urbanrepml.tracking.store import (  # noqa: F401 - resolve_tracking_uri and check_server re-exported
    check_server,
    check_tracking_uri,
    http_defaults,
    prepare_store,
    resolve_tracking_uri,
)


def configure_tracking() -> str:
    """Point MLflow at the resolved tracking URI and return it.

    Checks the URI first (a known scheme, a writable SQLite folder, a server that answers), bounds
    MLflow's HTTP retries and timeout where the user has not set them, and creates or migrates a
    SQLite store once under a file lock (see :mod:`urbanrepml.tracking.store`).
    """
    uri = resolve_tracking_uri()
    # MLflow's system-metrics monitor logs INFO lines at every start and stop (~20 per fuse): warnings only
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    http_defaults()
    check_tracking_uri(uri)
    prepare_store(uri)
    mlflow.set_tracking_uri(uri)
    return uri


@contextlib.contextmanager
def stage_run(
    stage: str,
    study_area: str,
    *,
    params: Mapping[str, object] | None = None,
    tags: Mapping[str, object] | None = None,
    run_name: str | None = None,
    nested: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """Start (or attach to) the run of one stage; mark it FAILED if the body raises.

    ``tags`` keys are given without the ``urbanrepml.`` prefix.
    """
    configure_tracking()
    if mlflow.active_run() is not None:
        nested = True  # a stage called inside another stage's run (pipeline, promote) becomes its child run
    attach = os.environ.get("MLFLOW_RUN_ID") and not nested and mlflow.active_run() is None
    if not attach and not nested and mlflow.active_run() is None:
        mlflow.set_experiment(experiment_name(study_area))
    run = mlflow.start_run(run_name=None if attach else run_name, nested=nested)
    with ending_run():
        mlflow.set_tags({tag("stage"): stage, tag("study_area"): study_area, **process_tags(),
                         **{tag(k): str(v) for k, v in (tags or {}).items()}})
        if params:
            log_new_params(params)
        yield run


def log_new_params(params: Mapping[str, object]) -> None:
    """Log the params the active run does not hold yet.

    Under ``mlflow run`` the CLI has already logged the entry point's own params
    (as the user typed them); logging them again with another formatting would clash.
    """
    run = mlflow.active_run()
    existing = mlflow.get_run(run.info.run_id).data.params
    fresh = {k: v for k, v in params.items() if k not in existing}
    if fresh:
        mlflow.log_params(fresh)


@contextlib.contextmanager
def ending_run() -> Iterator[None]:
    """End the active run FINISHED when the body completes, FAILED when it raises (then re-raise)."""
    try:
        yield
    except BaseException:
        try:
            mlflow.end_run(status="FAILED")
        except Exception:  # noqa: BLE001 - the store itself failed (gone, full, read-only): report the first error
            _forget_active_run()
        raise
    else:
        mlflow.end_run(status="FINISHED")


def _forget_active_run() -> None:
    """Drop the active run from MLflow's stack without writing to the store (it could not be written)."""
    with contextlib.suppress(Exception):  # private API; nothing else to do
        from mlflow.tracking.fluent import _active_run_stack

        stack = _active_run_stack.get()
        if stack:
            stack.pop()


def log_figure(fig, name: str, *, png: bool = True) -> None:
    """Log a plotly figure as ``figures/<name>.html`` and ``figures/<name>.png``.

    The HTML embeds plotly.js (about 4.7 MB a figure), so it draws offline, in the MLflow UI as well as
    from a downloaded artifact folder; the PNG is drawn with matplotlib
    (:mod:`urbanrepml.tracking.figure_png`). A PNG that cannot be drawn is a warning line, not a failure.
    """
    import sys
    import tempfile

    from urbanrepml.tracking.figure_png import write_png

    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / f"{name}.html"
        fig.write_html(html, include_plotlyjs=True, full_html=True)
        mlflow.log_artifact(str(html), artifact_path="figures")
        if png:
            try:
                out = write_png(fig, Path(tmp) / f"{name}.png")
            except Exception as exc:  # noqa: BLE001 - the HTML is the record; say what is missing
                print(f"warning: figure {name}: no PNG ({type(exc).__name__}: {exc})", file=sys.stderr)
            else:
                mlflow.log_artifact(str(out), artifact_path="figures")
