"""Atomic writes: every output is written under a temporary name in its own folder, then renamed.

A job that fails or is killed therefore never leaves a half-written file under an output's name. Also the
one helper scripts use to send a job's stderr and logging to its Snakemake log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from typing import Iterator

from .errors import TokenfairError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to `path` (same folder and extension); on success rename it to `path`.

    On any exception the temporary file is removed and `path` is left untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    stem, ext = os.path.splitext(base)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary folder next to `path`; on success replace `path` (a folder) with it.

    On any exception the temporary folder is removed and `path` is left untouched."""
    import shutil

    path = os.fspath(path)
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_parquet(table, path: str | os.PathLike, **kwargs) -> None:
    """Write a pyarrow Table (or a dict of columns) to Parquet atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.table(table)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def save_npy(array, path: str | os.PathLike) -> None:
    """np.save atomically (the name is kept exactly: no .npy is appended)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def write_json(obj, path: str | os.PathLike, **kwargs) -> None:
    kwargs.setdefault("indent", 2)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, **kwargs)
        fh.write("\n")


@contextlib.contextmanager
def job_log(log_path: str | os.PathLike | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send stderr and logging of a Snakemake job to its log file.

    A TokenfairError (bad input) is written to the log and, as one line, to the job's original stderr so
    that Snakemake's own output shows it; the job then exits with status 1. Other exceptions propagate
    (their traceback goes to the log).
    """
    original = sys.stderr
    fh = open(log_path, "w", buffering=1, encoding="utf-8") if log_path else None
    if fh is not None:
        sys.stderr = fh
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield logging.getLogger("tokenfair")
    except TokenfairError as exc:
        msg = f"{type(exc).__name__}: {exc}"
        logging.getLogger("tokenfair").error(msg)
        print(msg, file=original, flush=True)
        raise SystemExit(1) from None
    finally:
        root.removeHandler(handler)
        if fh is not None:
            sys.stderr = original
            fh.close()
