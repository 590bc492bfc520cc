"""Dataset registry: fetch from a mirror, the cache or a real HTTP server; checksums; the CLI; `dataset:` in TOMLs."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, SHARED_DATA
from tests.support.processes import clean_env
from tests.support.registry import FILES, write_files
from urbanrepml.config import load_study_area
from urbanrepml.datasets import (
    DATASETS,
    DataFile,
    Dataset,
    fetch,
    fetch_file,
    get_dataset,
    list_datasets,
    register,
    status,
)
from urbanrepml.datasets.cli import main as datasets_main
from urbanrepml.errors import UrbanReprError
from urbanrepml.paths import datasets_cache_dir


def _cached_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.strip().splitlines() if line]


def test_fetch_from_mirror_reads_no_network_and_caches_nothing(tiny, monkeypatch):
    write_files(tiny["mirror"] / "group" / "tiny", FILES)
    monkeypatch.setenv("URBANREPML_DATA_MIRROR", str(tiny["mirror"]))
    folder = fetch("tiny")
    assert folder == tiny["mirror"].resolve() / "group" / "tiny"
    assert (folder / "sub/b.bin").read_bytes() == FILES["sub/b.bin"]
    assert fetch_file("tiny", "a.txt") == folder / "a.txt"
    assert tiny["requests"] == [] and _cached_files(tiny["cache"]) == []
    assert status("tiny") == "mirror"


def test_download_then_cache(tiny):
    assert status("tiny") == "missing"
    folder = fetch("tiny")
    assert folder == tiny["cache"] and _cached_files(folder) == ["a.txt", "sub/b.bin"]
    assert sorted(tiny["requests"]) == ["/a.txt", "/sub/b.bin"]
    assert (folder / "a.txt").read_bytes() == FILES["a.txt"]
    shutil.rmtree(tiny["served"])  # the source is gone: the cache serves
    assert fetch("tiny") == folder and len(tiny["requests"]) == 2
    assert status("tiny") == "cache"


def test_fetch_file_downloads_only_that_file(tiny):
    assert fetch_file("tiny", "sub/b.bin") == tiny["cache"] / "sub/b.bin"
    assert tiny["requests"] == ["/sub/b.bin"]
    assert status("tiny") == "partial (1/2 files)"


def test_download_checksum_mismatch_caches_nothing(tiny):
    (tiny["served"] / "a.txt").write_bytes(b"tampered\n" * 10)
    with pytest.raises(UrbanReprError) as err:
        fetch("tiny")
    message = str(err.value)
    assert "a.txt" in message and "does not match its checksum" in message and "nothing was cached" in message
    assert "\n" not in message
    left = _cached_files(tiny["cache"])
    assert "a.txt" not in left and not [p for p in left if p.endswith(".part")]  # no file, no leftover temp file


def test_longer_download_is_refused(tiny):
    (tiny["served"] / "a.txt").write_bytes(FILES["a.txt"] + b"more")
    with pytest.raises(UrbanReprError, match=r"got more than 6000 bytes.*nothing was cached"):
        fetch_file("tiny", "a.txt")
    assert _cached_files(tiny["cache"]) == []


def test_damaged_mirror_copy_is_an_error(tiny, monkeypatch):
    write_files(tiny["mirror"] / "group" / "tiny", {**FILES, "a.txt": b"x" * len(FILES["a.txt"])})
    monkeypatch.setenv("URBANREPML_DATA_MIRROR", str(tiny["mirror"]))
    with pytest.raises(UrbanReprError, match=r"mirror.*a\.txt does not match its checksum.*unset URBANREPML_DATA_MIRROR"):
        fetch("tiny")
    assert status("tiny").startswith("damaged (mirror: a.txt)")
    assert tiny["requests"] == [] and _cached_files(tiny["cache"]) == []


def test_damaged_cache_copy_is_replaced(tiny):
    fetch("tiny")
    (tiny["cache"] / "a.txt").write_bytes(b"y" * 10)
    assert fetch("tiny") == tiny["cache"]
    assert (tiny["cache"] / "a.txt").read_bytes() == FILES["a.txt"]


def test_mirror_missing_a_file_falls_through_to_download(tiny, monkeypatch):
    write_files(tiny["mirror"] / "group" / "tiny", {"a.txt": FILES["a.txt"]})
    monkeypatch.setenv("URBANREPML_DATA_MIRROR", str(tiny["mirror"]))
    assert fetch_file("tiny", "a.txt") == tiny["mirror"].resolve() / "group" / "tiny" / "a.txt"
    assert status("tiny") == "partial (1/2 files)"
    folder = fetch("tiny")  # one folder holding every file: the cache, filled from the mirror and the source
    assert folder == tiny["cache"] and _cached_files(folder) == ["a.txt", "sub/b.bin"]
    assert tiny["requests"] == ["/sub/b.bin"]


def test_mirror_missing_a_file_without_source_names_file_mirror_and_fix(tiny, monkeypatch):
    ds = tiny["ds"]
    monkeypatch.setitem(DATASETS, "tiny", Dataset(**{**ds.__dict__, "files": tuple(
        DataFile(f.path, f.sha256, f.size, None, f.licence) for f in ds.files)}))
    write_files(tiny["mirror"] / "group" / "tiny", {"a.txt": FILES["a.txt"]})
    monkeypatch.setenv("URBANREPML_DATA_MIRROR", str(tiny["mirror"]))
    with pytest.raises(UrbanReprError) as err:
        fetch("tiny")
    message = str(err.value)
    assert "sub/b.bin" in message and str(tiny["mirror"].resolve() / "group" / "tiny") in message
    assert "set URBANREPML_DATA_MIRROR to a folder holding group/tiny/sub/b.bin" in message


def test_unreachable_source_is_one_clear_error(tiny):
    (tiny["served"] / "a.txt").unlink()
    with pytest.raises(UrbanReprError, match=r"could not fetch a\.txt from http://127\.0\.0\.1:\d+/a\.txt "
                                             r"\(HTTP Error 404: File not found\).*URBANREPML_DATA_MIRROR"):
        fetch("tiny")
    assert "a.txt" not in _cached_files(tiny["cache"])


def test_package_source(tiny, monkeypatch):
    pkg_file = Path(pytest.__file__).parent / "__main__.py"
    data = pkg_file.read_bytes()
    entry = DataFile("main.py", hashlib.sha256(data).hexdigest(), len(data), "package:pytest/__main__.py", "MIT")
    monkeypatch.setitem(DATASETS, "tiny", Dataset(**{**tiny["ds"].__dict__, "files": (entry,)}))
    assert (fetch("tiny") / "main.py").read_bytes() == data
    gone = DataFile("x.bin", "0" * 64, 1, "package:no_such_package_for_tests/x.bin", "none")
    monkeypatch.setitem(DATASETS, "tiny", Dataset(**{**tiny["ds"].__dict__, "files": (gone,)}))
    with pytest.raises(UrbanReprError, match="not installed; pip install no_such_package_for_tests"):
        fetch("tiny")


def test_unknown_names():
    with pytest.raises(UrbanReprError, match=r"unknown dataset 'nope'; registered datasets: amsterdam, helsinki"):
        fetch("nope")
    with pytest.raises(UrbanReprError, match=r"dataset 'porto_alegre' has no file 'x\.pbf'; its files: poa_elevation"):
        fetch_file("porto_alegre", "x.pbf")


@pytest.mark.parametrize("field,value,message", [
    ("name", "Bad Name", "use lower-case letters"),
    ("folder", "../up", "must be a relative"),
    ("files", (DataFile("../x", "0" * 64, 1, None, "none"),), "stay inside"),
    ("files", (), "lists no files"),
])
def test_register_checks_entries(tiny, field, value, message):
    with pytest.raises(UrbanReprError, match=message):
        register(Dataset(**{**tiny["ds"].__dict__, "name": "other", field: value}))
    with pytest.raises(UrbanReprError, match="already registered"):
        register(tiny["ds"])


def test_cache_dir_honours_data_dir_and_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("URBANREPML_DATA_DIR", str(tmp_path / "d"))
    assert datasets_cache_dir() == tmp_path / "d" / "datasets"
    monkeypatch.delenv("URBANREPML_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets_cache_dir() == tmp_path / "xdg" / "urbanrepml" / "datasets"


def test_cli_list_and_fetch(tiny, monkeypatch, capsys):
    write_files(tiny["mirror"] / "group" / "tiny", FILES)
    monkeypatch.setenv("URBANREPML_DATA_MIRROR", str(tiny["mirror"]))
    assert datasets_main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "files", "size", "licence", "where"]
    assert out[1 + list_datasets().index("tiny")].split() == ["tiny", "2", "16.2", "KB", "CC0", "mirror"]
    assert out[-2] == f"mirror: {tiny['mirror'].resolve()}" and out[-1] == f"cache:  {tiny['cache'].parent.parent}"
    assert datasets_main(["fetch", "tiny"]) == 0
    assert capsys.readouterr().out == f"{tiny['mirror'].resolve() / 'group' / 'tiny'}\n"
    with pytest.raises(SystemExit) as exit_:
        datasets_main(["fetch", "nope"])
    assert exit_.value.code == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: unknown dataset 'nope'")
    with pytest.raises(SystemExit) as exit_:
        datasets_main([])
    assert exit_.value.code == 2


@pytest.mark.e2e
def test_cli_as_a_process(tmp_path):
    env = clean_env(URBANREPML_DATA_DIR=str(tmp_path / "data"))
    env.pop("URBANREPML_DATA_MIRROR", None)
    cmd = [sys.executable, "-m", "urbanrepml.datasets.cli"]
    done = subprocess.run([*cmd, "fetch", "amsterdam"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
                          check=False)
    assert done.returncode == 2 and done.stdout == ""
    err = _error_lines(done.stderr)
    assert len(err) == 1 and "amsterdam_centre.osm.pbf" in err[0] and "no public download" in err[0]
    assert "set URBANREPML_DATA_MIRROR" in err[0]
    done = subprocess.run([*cmd, "fetch", "helsinki"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "data" / "datasets" / "helsinki")


def test_toml_dataset_syntax(tiny, tmp_path, study_area_toml):
    toml = study_area_toml("t", [4.89, 52.36, 4.90, 52.37], filename="area.toml", sources={
        "osm": "dataset:tiny/a.txt", "gtfs": ["dataset:tiny/sub/b.bin"], "images": "dataset:tiny", "rasters": {"local": "own.tif"}})
    (tmp_path / "own.tif").write_bytes(b"plain relative paths keep working")
    spec = load_study_area(toml)
    assert spec.sources.osm == tiny["cache"] / "a.txt" and spec.sources.gtfs == (tiny["cache"] / "sub/b.bin",)
    assert spec.sources.images == tiny["cache"] and spec.sources.rasters["local"] == tmp_path / "own.tif"


@pytest.mark.parametrize("value,message", [
    ("dataset:nope/x.pbf", r"'sources.osm' = 'dataset:nope/x.pbf': unknown dataset 'nope'"),
    ("dataset:tiny/zzz.pbf", r"'sources.osm' = 'dataset:tiny/zzz.pbf': dataset 'tiny' has no file 'zzz.pbf'"),
    ("dataset:", r"names no dataset; write \"dataset:<name>/<file>\""),
])
def test_toml_dataset_syntax_errors(tiny, tmp_path, value, message, study_area_toml):
    toml = study_area_toml("t", [4.89, 52.36, 4.90, 52.37], sources={"osm": value}, filename="area.toml")
    with pytest.raises(UrbanReprError, match=message) as err:
        load_study_area(toml)
    assert str(err.value).startswith(str(toml))


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no data mirror beside the repository")
@pytest.mark.parametrize("name", [n for n in list_datasets() if n != "helsinki"])
def test_registry_matches_the_mirror(name, monkeypatch):
    monkeypatch.setenv("URBANREPML_DATA_MIRROR", str(SHARED_DATA))
    ds = get_dataset(name)
    assert status(name) == "mirror"
    folder = fetch(name)
    assert folder == SHARED_DATA.resolve() / ds.folder
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert on_disk == sorted(f.path for f in ds.files)  # every file of the mirror's folder is registered
    assert all(f.licence and (f.url or ds.name == "amsterdam") for f in ds.files)


def test_bundled_areas_name_their_files_through_the_registry():
    for toml in (REPO / "data" / "demo").glob("*/study_area.toml"):
        text = toml.read_text()
        assert "dataset:" in text
        assert not [p for p in toml.parent.iterdir() if p.name != "study_area.toml"]  # no third-party data in git


def test_helsinki_from_the_installed_package(data_dir):
    spec = load_study_area("helsinki")
    assert spec.sources.osm == data_dir / "datasets" / "helsinki" / "Helsinki.osm.pbf"
    assert hashlib.sha256(spec.sources.osm.read_bytes()).hexdigest() == get_dataset("helsinki").files[0].sha256
    assert spec.targets == {} and spec.sources.gtfs == ()


def test_helsinki_area_builds_cells(data_dir):
    from urbanrepml.areas import build_area

    area = build_area("helsinki", [8, 9])
    assert len(area.cells(9)) == 33 and len(area.cells(8)) == 10  # res-9 cells touching the extract's extent
