"""MLflow glue: the only package that imports mlflow at module level.

- :mod:`~urbanrepml.tracking.runs`: tracking URI, stage runs (tags, failure status).
- :mod:`~urbanrepml.tracking.lineage`: source files and tables as MLflow datasets.
- :mod:`~urbanrepml.tracking.tables`: log embedding tables, find the latest per (area, modality, resolution,
  source files).
- :mod:`~urbanrepml.tracking.store`: the tracking URI checked and its SQLite store prepared under a lock.
- :mod:`~urbanrepml.tracking.stale`: runs whose process died (``python -m urbanrepml runs close-stale``).
- :mod:`~urbanrepml.tracking.figure_png`: the matplotlib PNG beside every logged plotly figure.
"""

from urbanrepml.tracking.lineage import log_frame_input, log_source_files, log_table_input
from urbanrepml.tracking.runs import (
    TAG_PREFIX,
    configure_tracking,
    experiment_name,
    log_figure,
    resolve_tracking_uri,
    stage_run,
    tag,
)
from urbanrepml.tracking.tables import find_latest_table, log_embedding_table

__all__ = [
    "TAG_PREFIX",
    "configure_tracking",
    "experiment_name",
    "find_latest_table",
    "log_embedding_table",
    "log_figure",
    "log_frame_input",
    "log_source_files",
    "log_table_input",
    "resolve_tracking_uri",
    "stage_run",
    "tag",
]
