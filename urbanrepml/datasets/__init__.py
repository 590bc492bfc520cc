"""Registry of named data that lives outside the repository, fetched by checksum.

Each dataset (:class:`Dataset`) names its files, each pinned by sha256 and size, with a public
source and licence. :func:`fetch` returns a folder holding them all, looking in the local mirror
(``$URBANREPML_DATA_MIRROR``), then the cache, then downloading from the source; every file is
checked against its checksum wherever it comes from. Study-area TOMLs name files as
``"dataset:<name>/<file>"`` (see :mod:`urbanrepml.config`).

Example::

    from urbanrepml.datasets import fetch
    pbf = fetch("porto_alegre") / "poa_osm.pbf"

Depends only on the contract layer (errors, paths) and the standard library.
"""

from urbanrepml.datasets.base import DataFile, Dataset
from urbanrepml.datasets.registry import DATASETS, get_dataset, list_datasets, register
from urbanrepml.datasets.store import fetch, fetch_file, sha256_file, status

__all__ = [
    "DATASETS",
    "DataFile",
    "Dataset",
    "fetch",
    "fetch_file",
    "get_dataset",
    "list_datasets",
    "register",
    "sha256_file",
    "status",
]
