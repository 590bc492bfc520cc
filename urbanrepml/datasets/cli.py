"""``urbanrepml datasets list`` and ``urbanrepml datasets fetch NAME``.

``list`` prints one line per registered dataset (name, files, size, licence, where it is found
now: mirror, cache, or missing) and the mirror and cache folders; ``fetch NAME`` fetches a
dataset and prints the folder holding its files. Bad input ends with ``error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from urbanrepml.datasets.registry import get_dataset, list_datasets
from urbanrepml.datasets.store import fetch, status
from urbanrepml.errors import cli_main
from urbanrepml.paths import MIRROR_ENV, data_mirror, datasets_cache_dir


def _size(n: int) -> str:
    """Bytes in a short human form (``2.2 MB``)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="urbanrepml datasets", description="Registered datasets, fetched by checksum.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="name, files, size, licence and where each dataset is found")
    fetch_cmd = sub.add_parser("fetch", help="fetch a dataset (mirror, cache, or its source) and print its folder")
    fetch_cmd.add_argument("name", help="a registered dataset name (see `list`)")
    return parser


def _list() -> None:
    rows = [("name", "files", "size", "licence", "where")]
    for name in list_datasets():
        ds = get_dataset(name)
        rows.append((name, str(len(ds.files)), _size(ds.size), ds.licence, status(name)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}")
    mirror = data_mirror()
    print(f"mirror: {mirror if mirror else f'(none; set {MIRROR_ENV})'}")
    print(f"cache:  {datasets_cache_dir()}")


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Run the datasets command line with ``argv`` (default: ``sys.argv[1:]``); returns 0."""
    args = _parser().parse_args(argv)
    if args.command == "list":
        _list()
    else:
        print(fetch(args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
