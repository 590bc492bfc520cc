"""Fixtures of the dataset-registry tests: a real HTTP server and a temporary dataset ``tiny`` it serves."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial
from typing import ClassVar

import pytest

from tests.support.registry import FILES, write_files
from urbanrepml.datasets import DATASETS, DataFile, Dataset


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path/served``: yields (base url, folder, request log)."""
    served = tmp_path / "served"
    served.mkdir()
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served, _Handler.requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def tiny(monkeypatch, tmp_path, server):
    """A temporary dataset ``tiny`` (folder ``group/tiny`` in a mirror) whose files the server holds."""
    url, served, requests = server
    write_files(served, FILES)
    ds = Dataset(
        name="tiny", folder="group/tiny", description="test data", licence="CC0", attribution="nobody",
        files=tuple(DataFile(rel, hashlib.sha256(data).hexdigest(), len(data), f"{url}/{rel}", "CC0")
                    for rel, data in FILES.items()),
    )
    monkeypatch.setitem(DATASETS, "tiny", ds)
    monkeypatch.setenv("URBANREPML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("URBANREPML_DATA_MIRROR", raising=False)
    return {"ds": ds, "served": served, "requests": requests, "cache": tmp_path / "data" / "datasets" / "group" / "tiny",
            "mirror": tmp_path / "mirror"}
