"""Name -> :class:`Dataset`: the built-in catalog, plus any dataset registered at run time."""

from __future__ import annotations

import re

from urbanrepml.datasets.base import Dataset
from urbanrepml.datasets.catalog import BUILTIN
from urbanrepml.errors import UrbanReprError

DATASETS: dict[str, Dataset] = {}

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(DATASETS)


def get_dataset(name: str) -> Dataset:
    """The registered dataset ``name``.

    Raises:
        UrbanReprError: ``name`` is not registered (the message lists the known names).
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise UrbanReprError(
            f"unknown dataset {name!r}; registered datasets: {', '.join(list_datasets())} "
            "(see `python -m urbanrepml datasets list`)"
        ) from None


def register(dataset: Dataset, *, replace: bool = False) -> Dataset:
    """Add ``dataset`` to the registry (for example a team's own data on a shared mirror).

    Args:
        dataset: The entry; its ``name`` must be lower-case letters, digits, ``_`` or ``-``.
        replace: Allow replacing an entry of the same name.

    Raises:
        UrbanReprError: A bad name or folder, no files, a file path that leaves the dataset's folder,
            or a name already taken.
    """
    if not _NAME.match(dataset.name):
        raise UrbanReprError(f"dataset name {dataset.name!r}: use lower-case letters, digits, '_' or '-'")
    if not dataset.files:
        raise UrbanReprError(f"dataset {dataset.name!r} lists no files")
    folder_parts = dataset.folder.split("/")
    if dataset.folder.startswith("/") or "\\" in dataset.folder or any(p in ("", ".", "..") for p in folder_parts):
        raise UrbanReprError(f"dataset {dataset.name!r}: folder {dataset.folder!r} must be a relative, '/'-separated "
                             "path inside the mirror")
    for f in dataset.files:
        parts = f.path.split("/")
        if f.path.startswith("/") or "\\" in f.path or any(p in ("", ".", "..") for p in parts):
            raise UrbanReprError(f"dataset {dataset.name!r}: file path {f.path!r} must be relative, '/'-separated, "
                                 "and stay inside the dataset's folder")
    if dataset.name in DATASETS and not replace:
        raise UrbanReprError(f"dataset {dataset.name!r} is already registered; pass replace=True to replace it")
    DATASETS[dataset.name] = dataset
    return dataset


for _builtin in BUILTIN:
    register(_builtin)
