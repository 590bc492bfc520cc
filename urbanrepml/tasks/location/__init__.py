"""Location encoding: a location encoder trained to predict (contrastively) the embeddings stored at places.

- :mod:`~urbanrepml.tasks.location.data`: records (cell centres of a per-cell table, or CSV points) and the block split.
- :mod:`~urbanrepml.tasks.location.task`: the task on the generic loop, :class:`LocencConfig`, :func:`train_location_encoder`.
- :mod:`~urbanrepml.tasks.location.metrics`: location -> embedding retrieval (own record excluded), RAG vs geographic kNN.
- :mod:`~urbanrepml.tasks.location.evaluate`: per-cell tables, RAG features, the dense-grid PCA map.
- :mod:`~urbanrepml.tasks.location.search`: the Optuna search space of a family, from the model registry.
"""

from urbanrepml.models import location as _location  # noqa: F401 - registers the location_encoder family

FAMILY = "location_encoder"
