"""The image index contract: writer, reader and every check of the validator; the image embedding table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from urbanrepml.errors import UrbanReprError
from urbanrepml.images import (
    INDEX_META_KEY,
    EmbeddingMeta,
    ImageEmbeddings,
    ImageIndex,
    IndexMeta,
    embedding_frame,
    index_frame,
    parse_window,
    publish_on_success,
    read_embeddings,
    read_index,
    validate_index,
    write_embeddings,
    write_index,
    write_point_csv,
)


@pytest.fixture
def folder(tmp_path):
    """Three image files (contents do not matter to the contract) and a scene."""
    for name in ("a.jpg", "b.jpg", "c.jpg", "scene.tif"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def frame(**over):
    cols = {"image_id": ["i1", "i2", "i3"], "path": ["a.jpg", "b.jpg", "c.jpg"], "lat": [52.5, 52.6, -33.9],
                "lon": [13.4, 13.5, 151.2], "group": ["g1", "g1", "g2"], "captured_at": ["2019-08-15", None, "2020-01-02T10:00:00Z"],
                "split": ["train", "train", "test"]}
    cols.update(over)
    return index_frame(**cols)


META = IndexMeta(dataset="tiny", source_kind="photos")


def check(f, folder, meta=META):
    validate_index(f, meta, where="idx", root=folder)


def test_roundtrip_keeps_columns_types_and_metadata(folder):
    f = frame(identity=["p1", "p1", "p2"], country=["DE", "DE", None])
    index = ImageIndex(f, IndexMeta("tiny", "photos", producer_run_id="r1", extra={"k": "v"}), root=folder)
    path = write_index(index, folder / "index.parquet")
    back = read_index(path)
    assert list(back.frame.index) == ["i1", "i2", "i3"] and back.frame.index.name == "image_id"
    assert list(back.frame.columns) == ["path", "window", "lat", "lon", "group", "captured_at", "split", "identity", "country"]
    assert back.frame["captured_at"].dtype == "datetime64[ns]"
    assert back.frame["captured_at"].iloc[0] == pd.Timestamp("2019-08-15") and pd.isna(back.frame["captured_at"].iloc[1])
    assert back.frame["captured_at"].iloc[2] == pd.Timestamp("2020-01-02 10:00")  # UTC, tz dropped
    assert back.frame["country"].tolist() == ["DE", "DE", None] and back.frame["window"].tolist() == [None] * 3
    assert back.meta == IndexMeta("tiny", "photos", producer_run_id="r1", extra={"k": "v"})
    assert list(back.image_paths()) == [str(folder / n) for n in ("a.jpg", "b.jpg", "c.jpg")]
    assert not list(folder.glob(".index.parquet.*"))  # no temporary file left


def test_relative_paths_become_absolute_when_written_elsewhere(folder, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    index = ImageIndex(frame(), META, root=folder)
    back = read_index(write_index(index, other / "index.parquet"))
    assert back.frame["path"].tolist() == [str(folder / n) for n in ("a.jpg", "b.jpg", "c.jpg")]


def test_windows(folder):
    f = frame(path=["scene.tif"] * 3, window=["0,0,32,32", "32,0,32,32", None])
    check(f, folder)
    assert ImageIndex(f, META, root=folder).windows() == [(0, 0, 32, 32), (32, 0, 32, 32), None]
    with pytest.raises(UrbanReprError, match=r"idx: image 'i2': window '32,0,0,32' is not 'col_off,row_off,width,height'"):
        check(frame(path=["scene.tif"] * 3, window=["0,0,32,32", "32,0,0,32", None]), folder)
    with pytest.raises(UrbanReprError, match="not 'col_off,row_off,width,height'"):
        parse_window("1,2,3", where="w")


@pytest.mark.parametrize("change, message", [
    ({"image_id": ["i1", "i1", "i3"]}, r"idx: duplicate image ids, e\.g\. \['i1'\]; give every image its own id"),
    ({"image_id": ["i1", "", "i3"]}, "every 'image_id' must be a non-empty string"),
    ({"lat": [91.0, 52.6, -33.9]}, r"1 lat value\(s\) outside \[-90, 90\], e\.g\. 91 \(image 'i1'\)"),
    ({"lon": [13.4, 181.0, 151.2]}, r"1 lon value\(s\) outside \[-180, 180\], e\.g\. 181 \(image 'i2'\)"),
    ({"lat": [13.4, 13.5, 151.2], "lon": [52.5, 52.6, -33.9]}, r"lat and lon look swapped \(1 lat value\(s\) beyond ±90"),
    ({"lat": [np.nan, 52.6, -33.9]}, r"1 image\(s\) have no finite lat/lon, e\.g\. \['i1'\]"),
    ({"split": ["train", "dev", "test"]}, r"unknown split value\(s\) \['dev'\]; use train, val, test or null"),
    ({"split": ["train", "val", "test"]}, r"1 group\(s\) are cut across splits, e\.g\. group 'g1' in \['train', 'val'\]"),
    ({"split": ["train", None, "test"]}, r"group 'g1' in \['null', 'train'\]"),
    ({"path": ["a.jpg", "missing.jpg", "c.jpg"]}, r"1 image file\(s\) are missing, e\.g\. missing\.jpg \(relative paths start from"),
    ({"group": ["g1", None, "g2"]}, r"1 image\(s\) have no 'group', e\.g\. \['i2'\]"),
])
def test_each_bad_case_is_one_clear_line(folder, change, message):
    with pytest.raises(UrbanReprError, match=message) as err:
        check(frame(**change), folder)
    assert "\n" not in str(err.value) and str(err.value).startswith("idx: ")


def test_swap_hint_only_when_swapping_would_fit(folder):
    """Longitudes beyond ±90 cannot be latitudes: then it is a plain range error, not a swap hint."""
    with pytest.raises(UrbanReprError) as err:
        check(frame(lat=[95.0, 52.6, -33.9], lon=[13.4, 100.0, 151.2]), folder)
    assert "swapped" not in str(err.value) and "outside [-90, 90]" in str(err.value)


def test_structure_errors(folder):
    f = frame()
    with pytest.raises(UrbanReprError, match="missing column"):
        check(f.drop(columns=["split"]), folder)
    with pytest.raises(UrbanReprError, match=r"unknown column\(s\) \['colour'\]"):
        check(f.assign(colour="red"), folder)
    with pytest.raises(UrbanReprError, match="index must be named 'image_id'"):
        check(f.rename_axis("id"), folder)
    with pytest.raises(UrbanReprError, match="the index has no images"):
        check(f.iloc[:0], folder)
    with pytest.raises(UrbanReprError, match="unknown source kind 'video'"):
        check(f, folder, IndexMeta("tiny", "video"))
    with pytest.raises(UrbanReprError, match="'captured_at' must be a timestamp column"):
        check(f.assign(captured_at="2019"), folder)
    with pytest.raises(UrbanReprError, match="is not a date or time"):
        frame(captured_at=["2019-08-15", "yesterday-ish", None])


def test_reader_refuses_other_files(folder):
    pd.DataFrame({"a": [1]}).to_parquet(folder / "plain.parquet")
    with pytest.raises(UrbanReprError, match="no 'urbanrepml.images' metadata; is this an image index"):
        read_index(folder / "plain.parquet")
    (folder / "bad.parquet").write_text("not parquet")
    with pytest.raises(UrbanReprError, match="not a readable parquet file"):
        read_index(folder / "bad.parquet")
    with pytest.raises(UrbanReprError, match="image index .*nope.parquet does not exist"):
        read_index(folder / "nope.parquet")
    # a file whose rows break the contract is refused on read too (e.g. written by another tool)
    arrow = pa.Table.from_pandas(frame(image_id=["i1", "i1", "i3"]), preserve_index=True)
    arrow = arrow.replace_schema_metadata({**arrow.schema.metadata, INDEX_META_KEY: json.dumps(META.__dict__).encode()})
    pq.write_table(arrow, folder / "dups.parquet")
    with pytest.raises(UrbanReprError, match="duplicate image ids"):
        read_index(folder / "dups.parquet")


def test_nothing_half_written(folder):
    """A failing write leaves no file; a failing body of publish_on_success leaves the previous file untouched."""
    with pytest.raises(UrbanReprError):
        write_index(ImageIndex(frame(image_id=["i1", "i1", "i3"]), META, root=folder), folder / "out.parquet")
    assert not (folder / "out.parquet").exists() and not list(folder.glob(".out.parquet*"))
    final = folder / "pub" / "index.parquet"
    write_index(ImageIndex(frame(), META, root=folder), final)
    before = final.read_bytes()
    with pytest.raises(RuntimeError, match="boom"), publish_on_success(final) as (staged,):
        write_index(ImageIndex(frame(split=[None, None, None]), META, root=folder), staged, root=final.parent)
        raise RuntimeError("boom")
    # a failure before anything existed leaves no empty folder behind either
    with pytest.raises(RuntimeError, match="boom"), publish_on_success(folder / "new" / "deep" / "x.parquet"):
        raise RuntimeError("boom")
    assert not (folder / "new").exists()
    assert final.read_bytes() == before and sorted(p.name for p in final.parent.iterdir()) == ["index.parquet"]


def test_embedding_table_and_point_csv(tmp_path):
    values = np.arange(6, dtype=np.float64).reshape(3, 2) / 10
    f = embedding_frame(values, ["i1", "i2", "i3"])
    assert list(f.columns) == ["dim_0", "dim_1"] and f.dtypes.eq(np.float32).all()
    meta = EmbeddingMeta(dataset="tiny", encoder="small_cnn", weights_digest="ab" * 32, index_digest="cd" * 32)
    back = read_embeddings(write_embeddings(ImageEmbeddings(f, meta), tmp_path / "e.parquet"))
    assert back.meta == meta and np.array_equal(back.frame.to_numpy(), values.astype(np.float32))
    csv = write_point_csv(f, np.array([52.5, 52.6, -33.9]), np.array([13.4, 13.5, 151.2]), tmp_path / "e.csv")
    table = pd.read_csv(csv)
    assert list(table.columns) == ["dim_0", "dim_1", "geometry"]
    assert table["geometry"].tolist() == ["POINT (13.4 52.5)", "POINT (13.5 52.6)", "POINT (151.2 -33.9)"]
    bad = f.copy()
    bad.iloc[1, 0] = np.nan
    with pytest.raises(UrbanReprError, match=r"NaN or inf in 1 row\(s\), e\.g\. \['i2'\]"):
        write_embeddings(ImageEmbeddings(bad, meta), tmp_path / "bad.parquet")
    with pytest.raises(UrbanReprError, match="columns must be dim_0"):
        write_embeddings(ImageEmbeddings(f.rename(columns={"dim_1": "x"}), meta), tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()
