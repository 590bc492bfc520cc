"""Entry points run as real processes (``mlflow run``, ``python entrypoints/...``) or in-process, and their errors."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

# MLflow exports these to the environment (set_experiment, mlflow run); a child process must not inherit them.
MLFLOW_RUN_ENV = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without MLflow's run/experiment variables, plus ``extra``: the env for a child process."""
    return {**{k: v for k, v in os.environ.items() if k not in MLFLOW_RUN_ENV}, **extra}


def mlflow_run(entry: str, params: dict, cwd: Path, *, experiment: str | None = None, env: dict | None = None,
               timeout: int = 600) -> subprocess.CompletedProcess:
    """``mlflow run <repo> -e entry --env-manager local -P ...`` in ``cwd`` (data dir ``cwd/data``)."""
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local"]
    if experiment:
        cmd += ["--experiment-name", experiment]
    for k, v in params.items():
        cmd += ["-P", f"{k}={v}"]
    full_env = clean_env(URBANREPML_DATA_DIR=str(Path(cwd) / "data"), **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout)


def run_script(script: str, args: list[str], cwd: Path, *, env: dict | None = None,
               timeout: int = 300) -> subprocess.CompletedProcess:
    """``python entrypoints/<script> args...`` in ``cwd`` (data dir ``cwd/data``)."""
    full_env = clean_env(URBANREPML_DATA_DIR=str(Path(cwd) / "data"), **(env or {}))
    return subprocess.run([sys.executable, str(REPO / "entrypoints" / script), *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


def load_entry(name: str):
    """Import ``entrypoints/<name>.py`` as a module (to call its ``main`` in-process)."""
    spec = importlib.util.spec_from_file_location(f"entry_{name}", REPO / "entrypoints" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def error_lines(stderr: str) -> list[str]:
    """Our lines on stderr (MLflow's own INFO log lines, e.g. 'Creating a new experiment', are not ours)."""
    return [line for line in stderr.strip().splitlines() if not re.match(r"^\d{4}/\d\d/\d\d \S+ INFO mlflow", line)]


def run_mlflow_project(entry: str, params: dict, tracking_uri: str, cwd, experiment: str | None = None):
    """:func:`mlflow_run` against the tracking store ``tracking_uri`` (a real server, usually)."""
    return mlflow_run(entry, params, cwd, experiment=experiment, env={"MLFLOW_TRACKING_URI": tracking_uri})


def entry_process(script: str, args: list[str], cwd, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """``python entrypoints/<script> args...`` in ``cwd`` with this checkout first on ``PYTHONPATH``."""
    env = clean_env(URBANREPML_DATA_DIR=str(cwd / "data"), PYTHONPATH=str(REPO), **(env_extra or {}))
    return subprocess.run([sys.executable, str(REPO / "entrypoints" / script), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def entry_main(script: str, args: list[str], capsys) -> tuple[int, str, str]:
    """Run an entry script's main() in this process (same code path as the CLI, without the start-up cost)."""
    module = load_entry(script.removesuffix(".py"))
    code = 0
    try:
        module.main(args)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def run_entry_expect_error(name: str, argv: list[str], capsys) -> str:
    """Call entry point ``name``'s main in-process; it must exit 2 with one ``error: ...`` line, which is returned."""
    import pytest

    entry = load_entry(name)
    with pytest.raises(SystemExit) as exc:
        entry.main(argv)
    assert exc.value.code == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def one_line_error(excinfo) -> str:
    """The message of a raised error (``pytest.raises`` info); it must be one non-empty line."""
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def fuse_command(area: dict, *extra: str, launcher: list[str] | None = None) -> list[str]:
    """``python entrypoints/fuse.py`` on a small area dict (``toml``, ``tables``) with a small U-Net, plus ``extra``."""
    return [*(launcher or [sys.executable]), str(REPO / "entrypoints" / "fuse.py"), "--study_area", str(area["toml"]),
            "--tables", area["tables"], "--resolutions", "7,8,9", "--hidden_dims", "32,64,128", *extra]
