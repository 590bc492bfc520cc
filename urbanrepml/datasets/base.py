"""What a registered dataset is: named files, each pinned by sha256 and size, with its source and licence."""

from __future__ import annotations

from dataclasses import dataclass

PACKAGE_SCHEME = "package:"


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset.

    Attributes:
        path: Path relative to the dataset's folder, with ``/`` separators (``poa_osm.pbf``).
        sha256: Hex digest of the file's bytes; every copy is checked against it.
        size: Size in bytes.
        url: Where the file is fetched from when no mirror or cache holds it: an ``https://``
            (or ``http://``) address, or ``package:<package>/<path>`` for a file shipped inside an
            installed Python package. None when there is no public source (mirror or cache only).
        licence: Licence and attribution of this file.
    """

    path: str
    sha256: str
    size: int
    url: str | None
    licence: str


@dataclass(frozen=True)
class Dataset:
    """A named set of files that live outside the repository.

    Attributes:
        name: Registry name (``porto_alegre``); ``dataset:<name>/<file>`` in a study-area TOML.
        folder: The dataset's folder inside a mirror and inside the cache (``imagery/opensfm_lund``).
        description: One line saying what the data is.
        licence: The licences of its files, in short (``ODbL 1.0; MIT``).
        attribution: The line to keep with any copy or use of the data.
        files: The files, each pinned by checksum.
        note: Anything a user must know to obtain it (for example that there is no public URL).
    """

    name: str
    folder: str
    description: str
    licence: str
    attribution: str
    files: tuple[DataFile, ...]
    note: str = ""

    @property
    def size(self) -> int:
        """Total size of the files in bytes."""
        return sum(f.size for f in self.files)

    def file(self, path: str) -> DataFile | None:
        """The entry for ``path`` (relative to the dataset's folder), or None."""
        return next((f for f in self.files if f.path == path), None)
