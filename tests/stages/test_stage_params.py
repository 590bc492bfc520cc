"""One declaration of parameters: MLproject, argparse and ``python -m urbanrepml`` all come from each stage's Params."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml

from tests.support import REPO
from tests.support.processes import clean_env
from urbanrepml.errors import UrbanReprError
from urbanrepml.params import make, mlproject_parameters, parse, same_value
from urbanrepml.stages import ENTRY_POINTS, get_stage
from urbanrepml.stages.cli import TOOLS

MLPROJECT = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]


def test_every_entry_point_is_a_stage_and_a_script():
    assert set(MLPROJECT) == set(ENTRY_POINTS)
    for name in ENTRY_POINTS:
        assert (REPO / "entrypoints" / f"{name}.py").is_file(), name


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_mlproject_matches_params(name):
    """Names, types, defaults and the command line of MLproject equal the stage's Params (fails on drift)."""
    declared = mlproject_parameters(get_stage(name).params_cls)
    entry = MLPROJECT[name]
    got = {k: (v["type"], v.get("default")) for k, v in entry["parameters"].items()}
    assert list(got) == list(declared)
    for key, (mtype, default) in declared.items():
        assert got[key][0] == mtype, f"{name}.{key}: MLproject type {got[key][0]}, Params {mtype}"
        assert same_value(got[key][1], default), f"{name}.{key}: MLproject default {got[key][1]!r}, Params {default!r}"
    # every parameter reaches the script, unquoted (MLflow quotes values itself)
    assert entry["command"] == f"python entrypoints/{name}.py " + " ".join(f"--{k} {{{k}}}" for k in declared)


def test_parity_check_catches_drift():
    """The comparison above fails when a default or a type differs."""
    declared = mlproject_parameters(get_stage("fuse").params_cls)
    assert not same_value("201", declared["epochs"][1])
    assert same_value("200.0", declared["epochs"][1]) and same_value("''", declared["tables"][1])
    assert declared["register"] == ("string", "true") and declared["epochs"][0] == "float"


def test_same_value_reads_the_quoting_mlflow_run_logs():
    """`mlflow run` logs each value shell-quoted as it passed it; compared by meaning, they equal what the stage got."""
    assert same_value("''", None) and same_value("''", "") and same_value('""', None)
    assert same_value("'/x/dir with spaces/t.parquet'", "/x/dir with spaces/t.parquet")
    assert same_value("'/x/it'\"'\"'s.parquet'", "/x/it's.parquet")
    assert not same_value("'/x/a b.parquet'", "/x/a c.parquet") and not same_value("''", "poi=a.parquet")
    assert same_value("'a b' c", "'a b' c") and not same_value("'a b' c", "a b c")


def test_parse_converts_mlflow_strings():
    params_cls = get_stage("fuse").params_cls
    p = parse(params_cls, ["--epochs", "12.0", "--register", "False", "--tables", "", "--lr", "1e-3"], prog="fuse")
    assert p.epochs == 12 and p.register is False and p.tables is None and p.lr == pytest.approx(1e-3)
    assert p.model == "full_unet" and p.seed == 0
    with pytest.raises(UrbanReprError, match="parameter epochs: expected an integer, got '1.5'"):
        parse(params_cls, ["--epochs", "1.5"], prog="fuse")
    with pytest.raises(UrbanReprError, match="parameter model: expected one of full_unet, cone_unet, concat, ring"):
        parse(params_cls, ["--model", "gcn"], prog="fuse")
    with pytest.raises(UrbanReprError, match="parameter register: expected true or false"):
        make(params_cls, register="maybe")
    with pytest.raises(UrbanReprError, match="unrecognized arguments: --epoch 3"):
        parse(params_cls, ["--epoch", "3"], prog="fuse")


def test_modality_stage_params_are_the_modality_params():
    from urbanrepml.modalities import MODALITIES

    for name, cls in MODALITIES.items():
        stage_fields = [f.name for f in dataclasses.fields(get_stage(name).params_cls)]
        assert stage_fields == ["study_area", "resolution", *[f.name for f in dataclasses.fields(cls.Params)]]


@pytest.mark.e2e
def test_python_m_urbanrepml_help_and_errors(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "urbanrepml", *args], capture_output=True, text=True, cwd=tmp_path,
                              env=clean_env(PYTHONPATH=str(REPO)), timeout=120)

    out = run("--help")
    assert out.returncode == 0 and "commands: area, poi" in out.stdout
    out = run("probe", "--help")
    assert out.returncode == 0 and "--block_resolution" in out.stdout and "[default: 7]" in out.stdout
    out = run("nosuch")
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: unknown command 'nosuch'; commands: " + ", ".join(dict.fromkeys([*ENTRY_POINTS, *TOOLS]))]
    out = run("fuse", "--epochs", "-x")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error: ")
