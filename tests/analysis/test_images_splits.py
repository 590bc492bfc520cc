"""Splits of an image index: by group (stable hash), by time (boundaries), by spatial blocks; never cutting a group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from urbanrepml.analysis.splits import (
    assign_splits,
    assign_units,
    block_units,
    parse_ratios,
    split_by_blocks,
    split_by_group,
    split_by_time,
    split_counts,
)
from urbanrepml.errors import UrbanReprError
from urbanrepml.images import index_frame


def index(n_groups=40, per_group=(1, 9), seed=0, times=None):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(*per_group, size=n_groups)
    group = np.repeat([f"g{i}" for i in range(n_groups)], sizes)
    n = len(group)
    lat = np.repeat(rng.uniform(40, 60, n_groups), sizes) + rng.normal(0, 1e-4, n)
    lon = np.repeat(rng.uniform(-10, 30, n_groups), sizes) + rng.normal(0, 1e-4, n)
    return index_frame(image_id=[f"i{k}" for k in range(n)], path=["x.jpg"] * n, lat=lat, lon=lon, group=group,
                       captured_at=times(group) if times else None)


def groups_whole(frame, split):
    return (split.fillna("-").groupby(frame["group"].to_numpy()).nunique() == 1).all()


def test_group_split_keeps_groups_whole_and_is_close_to_the_ratios():
    frame = index(n_groups=400)
    split = split_by_group(frame, (0.8, 0.15, 0.05))
    assert groups_whole(frame, split)
    share = split.value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.8, abs=0.02) and share["val"] == pytest.approx(0.15, abs=0.02)
    assert share["test"] == pytest.approx(0.05, abs=0.02)


def test_group_split_is_stable_and_order_free():
    frame = index()
    a = split_by_group(frame, (0.6, 0.2, 0.2), salt="7")
    shuffled = frame.sample(frac=1.0, random_state=3)
    b = split_by_group(shuffled, (0.6, 0.2, 0.2), salt="7")
    pd.testing.assert_series_equal(a, b.loc[a.index])
    # a known assignment (BLAKE2b, not Python's salted hash): the same on every machine and run
    assert assign_units(np.array(["a", "b", "c", "d", "e"]), (0.6, 0.2, 0.2)).tolist() == \
        assign_units(np.array(["e", "d", "c", "b", "a"]), (0.6, 0.2, 0.2)).tolist()[::-1]
    assert not split_by_group(frame, (0.6, 0.2, 0.2), salt="8").equals(a)  # the salt changes the order


def test_every_positive_split_gets_a_unit_when_there_are_enough():
    units = np.array(["s1"] * 50 + ["s2"] * 2 + ["s3"] * 3)
    labels = assign_units(units, (0.8, 0.15, 0.05))
    assert set(labels) == {"train", "val", "test"}
    assert len(set(assign_units(np.array(["only"] * 4), (0.8, 0.15, 0.05)))) == 1  # one unit cannot be split
    assert set(assign_units(np.array(["a", "b", "c"]), (1.0, 0.0, 0.0))) == {"train"}


def test_time_split_boundaries():
    years = {f"g{i}": 2009 + i for i in range(12)}
    frame = index(n_groups=12, times=lambda g: [f"{years[x]}-06-30T12:00:00" for x in g])
    split = split_by_time(frame, "2016", "2018")
    per_group = split.groupby(frame["group"].to_numpy()).first()
    assert groups_whole(frame, split)
    assert {years[g] for g in per_group[per_group == "train"].index} == set(range(2009, 2017))
    assert {years[g] for g in per_group[per_group == "val"].index} == {2017, 2018}
    assert {years[g] for g in per_group[per_group == "test"].index} == {2019, 2020}
    # a date boundary is inclusive to its last instant; the next day is later
    by_day = split_by_time(frame, "2016-06-30", "2016-07-01").groupby(frame["group"].to_numpy()).first()
    assert by_day[next(g for g, y in years.items() if y == 2016)] == "train"
    by_month = split_by_time(frame, "2016-05", "2016-06").groupby(frame["group"].to_numpy()).first()
    assert by_month[next(g for g, y in years.items() if y == 2016)] == "val"


def test_time_split_uses_the_first_capture_of_a_group_and_leaves_untimed_groups_out():
    frame = index_frame(image_id=["a", "b", "c", "d"], path=["x"] * 4, lat=[1] * 4, lon=[1] * 4, group=["s", "s", "t", "u"],
                        captured_at=["2016-12-31T23:00:00", "2017-01-02", None, "2019-01-01"])
    split = split_by_time(frame, "2016", "2017")
    assert split.tolist() == ["train", "train", None, "test"]
    assert split_counts(frame.assign(split=split))["images_unassigned"] == 1


def test_time_split_errors():
    frame = index(n_groups=3)
    with pytest.raises(UrbanReprError, match="no image has a captured_at time"):
        split_by_time(frame, "2016", "2018")
    with pytest.raises(UrbanReprError, match="needs train_until and val_until"):
        assign_splits(frame, "time", train_until="2016")
    with pytest.raises(UrbanReprError, match="val_until 2015 ends before train_until 2016"):
        split_by_time(frame, "2016", "2015")
    with pytest.raises(UrbanReprError, match="parameter train_until: 'next year' is not a year, month or date"):
        split_by_time(frame, "next year", "2018")


def test_block_split_keeps_blocks_and_groups_whole():
    import h3

    frame = index(n_groups=300, seed=5)
    # a few groups that straddle two far-apart places join those blocks into one unit
    frame.loc[frame.index[:3], ["lat", "lon"]] = [[45.0, 5.0], [55.0, 25.0], [45.0, 5.0]]
    split = split_by_blocks(frame, block_resolution=3, ratios=(0.7, 0.2, 0.1))
    assert groups_whole(frame, split)
    blocks = np.array([h3.latlng_to_cell(a, b, 3) for a, b in zip(frame["lat"], frame["lon"], strict=False)])
    assert (split.groupby(blocks).nunique() == 1).all()
    share = split.value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.7, abs=0.1) and share["test"] > 0
    units = block_units(frame, 3)
    assert len(set(units[np.isin(blocks, blocks[:3])])) == 1
    with pytest.raises(UrbanReprError, match="block_resolution must be an H3 resolution 0..15"):
        split_by_blocks(frame, block_resolution=16)


def test_assign_splits_and_ratios():
    frame = index()
    assert assign_splits(frame, "none").isna().all()
    assert groups_whole(frame, assign_splits(frame, "group", ratios="8,1,1"))
    assert parse_ratios("8,1,1") == pytest.approx((0.8, 0.1, 0.1))
    for bad in ("0.8,0.2", "a,b,c", "-1,1,1", "0,0,0"):
        with pytest.raises(UrbanReprError, match="parameter ratios: .* must be three non-negative numbers"):
            parse_ratios(bad)
    with pytest.raises(UrbanReprError, match="parameter split: expected one of none, group, time, blocks"):
        assign_splits(frame, "random")
    counts = split_counts(frame.assign(split=assign_splits(frame, "group")))
    assert counts["images_train"] + counts["images_val"] + counts["images_test"] == len(frame)
    assert counts["groups_train"] + counts["groups_val"] + counts["groups_test"] == frame["group"].nunique()
