"""The tiny two-file dataset of the dataset-registry tests, and writing files into a folder."""

from __future__ import annotations

from pathlib import Path

FILES = {"a.txt": b"alpha\n" * 1000, "sub/b.bin": bytes(range(256)) * 40}


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write ``{relative path: bytes}`` under ``folder`` (sub-folders made as needed)."""
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
