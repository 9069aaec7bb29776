"""Atomic writes: every output is written under a temporary name in its own folder, then renamed.

A job that fails or is killed therefore never leaves a half-written file under an output's name. Also the
one helper scripts use to send a job's stderr and logging to its Snakemake log, and reading Parquet with
a DataError that names the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from typing import Iterator

from .errors import DataError, TokenfairError


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


def parquet_file(path: str | os.PathLike, what: str = "the file", columns=(), **kwargs):
    """A pyarrow ParquetFile (kwargs go to it), with a DataError naming the file when it cannot be opened
    ("<path>: cannot read <what>, not a Parquet file (...)") or lacks one of `columns` ("<path>: missing column(s) ...")."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path, **kwargs)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a file that is not Parquet
        raise DataError(f"{path}: cannot read {what}, not a Parquet file ({exc})") from None
    lacking = [c for c in columns if c not in pf.schema_arrow.names]
    if lacking:
        raise DataError(f"{path}: missing column(s) {', '.join(lacking)} (see docs/architecture.md)")
    return pf


def read_parquet(path: str | os.PathLike, columns=None, what: str = "the file", use_threads: bool = True):
    """A Parquet file as a pyarrow Table (only `columns` when given, each required); DataError naming the file
    when it cannot be read or lacks a column (see parquet_file)."""
    pf = parquet_file(path, what, columns or ())
    try:
        return pf.read(columns=columns, use_threads=use_threads)
    except Exception as exc:
        raise DataError(f"{path}: cannot read {what} ({exc})") from None


def write_table(df, folder: str | os.PathLike, name: str) -> list[str]:
    """A DataFrame as <folder>/<name>.parquet and <folder>/<name>.csv, each atomically; returns both paths."""
    import pyarrow as pa

    os.makedirs(folder, exist_ok=True)
    pq_path, csv_path = os.path.join(folder, f"{name}.parquet"), os.path.join(folder, f"{name}.csv")
    write_parquet(pa.Table.from_pandas(df, preserve_index=False), pq_path)
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    return [pq_path, csv_path]


def read_json(path: str | os.PathLike):
    """A JSON file's content; DataError naming the file when it is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


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
