"""Bad input and a failing environment end in one line `error: ...` naming the resource, exit 2, the run FAILED."""

from __future__ import annotations

import errno
import os
import stat

import pytest
from mlflow.tracking import MlflowClient

from tests.support.processes import load_entry

BOX = "[-51.266, -30.113, -51.132, -29.988]"


def _main(name: str, args: list[str], capsys) -> tuple[int, str, str]:
    """An entry point's main() in this process: exit status, stdout, stderr."""
    code = 0
    try:
        load_entry(name).main(args)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if " INFO mlflow" not in line and not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    return lines[0]


def _runs(tracking: str, area: str):
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name(f"urbanrepml-{area}")
    return client.search_runs([exp.experiment_id]) if exp else []


@pytest.mark.parametrize(("args", "expected"), [
    (["--patience", "-3"], "error: parameter patience: must be >= 0, got -3 (0: no early stopping)"),
    (["--epochs", "-1"], "error: parameter epochs: must be >= 1, got -1"),
    (["--tables", "poi="], ("error: parameter tables: modality 'poi' has no path in 'poi='; "
                           "write tables=poi=path/to/poi_res9.parquet (or leave tables empty)")),
    (["--dropout", "1.5"], "error: parameter dropout: must be in [0, 1), got 1.5"),
])
def test_fuse_parameters_out_of_range_name_the_parameter(args, expected, tracking, capsys):
    before = len(_runs(tracking, "porto_alegre"))
    code, _, err = _main("fuse", args, capsys)
    assert code == 2 and _one_error(err) == expected
    assert len(_runs(tracking, "porto_alegre")) == before  # refused before any run exists


@pytest.mark.parametrize(("text", "expected"), [
    ('osmm = "x.pbf"', "unknown key 'osmm' in [sources] (did you mean 'osm'?); known keys: osm, gtfs, rasters, images"),
    ('[source]\nosm = "x.pbf"', ("unknown key 'source' in the top level (did you mean 'sources'?); "
                                "known keys: name, boundary, sources, targets")),
])
def test_unknown_study_area_keys_name_the_key_and_the_known_ones(text, expected, tmp_path):
    from urbanrepml.config import load_study_area
    from urbanrepml.errors import UrbanReprError

    body = f"[sources]\n{text}" if not text.startswith("[") else text
    toml = tmp_path / "a.toml"
    toml.write_text(f'name = "a"\nboundary = {BOX}\n{body}\n')
    with pytest.raises(UrbanReprError) as info:
        load_study_area(toml)
    assert str(info.value) == f"{toml}: {expected}"


@pytest.mark.parametrize("key", ["osm", "gtfs", "rasters"])
def test_a_folder_given_as_a_source_file_is_one_line(key, tmp_path, tracking, capsys):
    (tmp_path / "feeds").mkdir()
    value = {"osm": 'osm = "feeds"', "gtfs": 'gtfs = ["feeds"]', "rasters": '[sources.rasters]\nelevation = "feeds"'}[key]
    toml = tmp_path / "dirsrc.toml"
    toml.write_text(f'name = "dirsrc"\nboundary = {BOX}\n[sources]\n{value}\n')
    entry = {"osm": "poi", "gtfs": "gtfs", "rasters": "raster"}[key]
    code, _, err = _main(entry, ["--study_area", str(toml)], capsys)
    where = "sources.rasters.elevation" if key == "rasters" else f"sources.{key}"
    assert code == 2
    assert _one_error(err) == f"error: {toml}: '{where}' points to {tmp_path / 'feeds'}, which is a folder; name the file in it"


def test_a_folder_given_as_a_table_is_one_line(tmp_path, tracking, capsys):
    (tmp_path / "tables").mkdir()
    code, _, err = _main("probe", ["--study_area", "amsterdam", "--table", str(tmp_path / "tables")], capsys)
    assert code == 2 and _one_error(err) == f"error: embedding table {tmp_path / 'tables'} is a folder; name the .parquet file in it"


def test_a_truncated_geotiff_is_one_line_and_the_run_failed(tmp_path, tracking, capsys):
    from urbanrepml.datasets import fetch_file

    whole = fetch_file("porto_alegre", "poa_elevation.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(whole[: len(whole) // 2])
    toml = tmp_path / "trunc.toml"
    toml.write_text(f'name = "trunc"\nboundary = {BOX}\n[sources.rasters]\nelevation = "cut.tif"\n')
    code, _, err = _main("raster", ["--study_area", str(toml), "--resolution", "8"], capsys)
    line = _one_error(err)
    assert code == 2 and line.startswith(f"error: raster {tmp_path / 'cut.tif'} is truncated or corrupt: rows ")
    assert "IReadBlock failed" in line
    (run,) = _runs(tracking, "trunc")
    assert run.info.status == "FAILED"
    assert not (tmp_path / "data" / "tables" / "trunc").exists()


@pytest.mark.parametrize(("uri", "expected"), [
    ("foo://bar", ("error: tracking URI foo://bar: unknown scheme 'foo'; use sqlite:///path/mlflow.db, "
                  "postgresql://user@host/db, http(s)://server:port or a folder path (MLFLOW_TRACKING_URI)")),
    ("sqlite:////proc/x/mlflow.db", ("error: tracking store sqlite:////proc/x/mlflow.db: folder /proc/x does not exist; "
                                    "create it or point MLFLOW_TRACKING_URI at a writable place")),
    ("sqlite:////proc/mlflow.db", ("error: tracking store sqlite:////proc/mlflow.db: cannot create files in folder /proc "
                                  "(No such file or directory); point MLFLOW_TRACKING_URI at a writable place")),
])
def test_an_unusable_tracking_uri_is_one_line(uri, expected, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("URBANREPML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    code, _, err = _main("area", ["--study_area", "amsterdam", "--resolutions", "9"], capsys)
    assert code == 2 and _one_error(err) == expected


def test_a_read_only_data_dir_is_one_line_and_the_run_failed(tracking, monkeypatch, capsys):
    """The table is written inside the run: a data dir that cannot be created fails the run with one line naming it."""
    monkeypatch.setenv("URBANREPML_DATA_DIR", "/proc/urbanrepml-data")
    before = {r.info.run_id for r in _runs(tracking, "amsterdam")}
    code, _, err = _main("poi", ["--study_area", "amsterdam"], capsys)
    line = _one_error(err)
    assert code == 2 and line.startswith("error: /proc/urbanrepml-data") and "URBANREPML_DATA_DIR" in line
    (run,) = [r for r in _runs(tracking, "amsterdam") if r.info.run_id not in before]
    assert run.info.status == "FAILED"


def test_a_full_disk_is_one_line_and_leaves_no_table(tracking, tmp_path, monkeypatch, capsys):
    """ENOSPC while the table is written (simulated: pyarrow raising the OSError a full disk gives)."""
    from urbanrepml import tables

    def full(table, where, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(where))

    monkeypatch.setattr(tables.pq, "write_table", full)
    before = {r.info.run_id for r in _runs(tracking, "amsterdam")}
    code, _, err = _main("poi", ["--study_area", "amsterdam", "--resolution", "8"], capsys)
    line = _one_error(err)
    assert code == 2 and line.startswith("error: no space left on the device writing ")
    assert "poi_res8.parquet" in line
    (run,) = [r for r in _runs(tracking, "amsterdam") if r.info.run_id not in before]
    assert run.info.status == "FAILED"
    assert not list((tmp_path / "data" / "tables").rglob("*.parquet"))
    assert not (tmp_path / "data" / "cache").exists()  # nor an area cache entry for the failed run


def test_a_failed_modality_run_writes_no_area_cache_and_tables_are_0644(tracking, tmp_path, monkeypatch, capsys):
    old = os.umask(0o022)
    try:
        toml = tmp_path / "cut.toml"
        from urbanrepml.datasets import fetch

        pbf = (fetch("amsterdam") / "amsterdam_centre.osm.pbf").read_bytes()
        (tmp_path / "cut.osm.pbf").write_bytes(pbf[: len(pbf) // 2])
        toml.write_text('name = "cutcache"\nboundary = [4.8906, 52.3657, 4.9037, 52.3737]\n[sources]\nosm = "cut.osm.pbf"\n')
        code, _, err = _main("poi", ["--study_area", str(toml)], capsys)
        assert code == 2 and "cut.osm.pbf" in _one_error(err)
        assert not (tmp_path / "data" / "cache").exists()
        code, _, err = _main("poi", ["--study_area", "amsterdam"], capsys)
        assert code == 0, err
        (table,) = (tmp_path / "data" / "tables" / "amsterdam").glob("poi_res9.parquet")
        assert stat.S_IMODE(table.stat().st_mode) == 0o644
        assert list((tmp_path / "data" / "cache" / "areas").glob("amsterdam-*/area.npz"))  # cached on success
    finally:
        os.umask(old)


def test_describe_failure_names_the_resource():
    from urbanrepml.errors import describe_failure

    assert describe_failure(IsADirectoryError(errno.EISDIR, "Is a directory", "/d/osm")) == \
        "/d/osm is a folder, not a file; point the setting at a file"
    assert describe_failure(KeyError("x")) is None  # a bug keeps its traceback
    import sqlite3

    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as exc:
        assert "database or disk is full" in describe_failure(exc)
