"""Image records of the location encoder: an image index's embeddings, filtered by split, scoped by the dataset."""

from __future__ import annotations

import numpy as np
import pytest

from urbanrepml.errors import UrbanReprError
from urbanrepml.images import (
    EmbeddingMeta,
    ImageEmbeddings,
    ImageIndex,
    IndexMeta,
    embedding_frame,
    index_frame,
    write_embeddings,
    write_index,
)
from urbanrepml.stages.locenc import Params, read_records


@pytest.fixture
def indexed(tmp_path):
    """Six images of a scene series: four train, one val, one test; 3-d embeddings ``i`` * (1, 2, 3)."""
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(b"x")
    ids = [f"im{i}" for i in range(6)]
    frame = index_frame(image_id=ids, path=[f"{i}.png" for i in range(6)], lat=[47.0 + i / 100 for i in range(6)],
                        lon=[-99.0 - i / 100 for i in range(6)], group=[f"y{i}" for i in range(6)],
                        captured_at=[f"{2009 + i}-06-01" for i in range(6)],
                        split=["train", "train", "train", "train", "val", "test"])
    path = write_index(ImageIndex(frame, IndexMeta(dataset="scenes", source_kind="chips")), tmp_path / "index.parquet")
    emb = embedding_frame(np.outer(np.arange(6), [1.0, 2.0, 3.0]), ids)
    write_embeddings(ImageEmbeddings(emb, EmbeddingMeta("scenes", "small_cnn", "ab" * 32)), tmp_path / "embeddings_small_cnn.parquet")
    return path


def test_train_images_become_records_scoped_by_their_dataset(indexed):
    records = read_records(Params(images=str(indexed), image_encoder="small_cnn"), spec=None)
    assert records.kind == "images" and records.scope == "scenes"
    assert list(records.data.ids) == ["im0", "im1", "im2", "im3"]
    assert np.allclose(records.data.x[3], [3.0, 6.0, 9.0]) and records.data.lat[2] == pytest.approx(47.02)
    both = read_records(Params(images=str(indexed), image_encoder="small_cnn", image_splits="train,val"), spec=None)
    assert both.data.n == 5 and both.digest != records.digest
    assert read_records(Params(images=str(indexed), image_encoder="small_cnn", image_splits="all"), spec=None).data.n == 6


def test_bad_image_records_are_one_line(indexed):
    with pytest.raises(UrbanReprError, match="no efficientnet_lite0 embeddings of image index 'scenes'.*embed_images"):
        read_records(Params(images=str(indexed)), spec=None)
    with pytest.raises(UrbanReprError, match="parameter image_splits"):
        read_records(Params(images=str(indexed), image_encoder="small_cnn", image_splits="holdout"), spec=None)
    with pytest.raises(UrbanReprError, match="either input or images"):
        read_records(Params(images=str(indexed), input="x.csv"), spec=None)
    with pytest.raises(UrbanReprError, match="no image index"):
        read_records(Params(images=str(indexed.parent / "nothing")), spec=None)
