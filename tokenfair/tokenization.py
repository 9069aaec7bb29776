"""Tokenizers (a byte-level BPE trained on the train split, or a given tokenizer.json), encoding a split into a
token shard, and reading shards back.

Shards (docs/architecture.md): `tokens/<split>.npy`, one flat uint32 array of the split's documents in
documents.parquet order, each followed by the end-of-document id when the corpus has `eod: true`, and
`tokens/<split>.index.parquet` (doc_id, start, length with EOD). An evaluation-only corpus is encoded the same
way, all its splits together, by each training corpus's tokenizer: `ood/<corpus>.npy` + `.index.parquet`.

`python -m tokenfair.tokenization --train-embedded pydoc --vocab-size 4096 --out <file>` trains the project's
byte-level BPE on an embedded corpus (all its documents): how tokenizers/pydoc-bpe4k/tokenizer.json is made.

Threads: `tokenizers` parallelises batches with a Rayon pool that is created on first use and sized from
RAYON_NUM_THREADS; `set_threads` must therefore run before any encoding or training in the process.

Odd text: the BPE trainer's time grows with the square of a pre-tokenized piece's length (a 200 kB run of
letters takes 20 s, a 20 MB one would take days), so pieces longer than `max_piece_bytes` are cut for training
(`train_bpe`). The trainer is Rust code that sees no signal until it returns; `train_tokenizer` therefore runs
it in a child process (`python -m tokenfair.tokenization --documents ...`) that SIGINT or SIGTERM stop at once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

import numpy as np

from .errors import DataError
from .paths import EOD_TOKEN, PAD_TOKEN, SPECIAL_TOKENS

log = logging.getLogger("tokenfair.tokenization")  # also when run as python -m (__main__)

# Names tried, in order, when a given tokenizer.json does not say which token ends a document / pads.
EOD_CANDIDATES = (EOD_TOKEN, "</s>", "<eos>", "<|end_of_text|>")
PAD_CANDIDATES = (PAD_TOKEN, "<pad>", "[PAD]", "<|padding|>")

BATCH_CHARS = 2_000_000  # text per encode_batch call (two calls in flight keep every thread busy)
BATCH_DOCS = 4096
MAX_PIECE_BYTES = 1024  # default of tokenizers.<id>.max_piece_bytes (config.schema.yaml)
PROGRESS_CHARS = 50_000_000  # training and encoding log a line per this much text read
HEARTBEAT_S = 60  # a waiting parent logs that the trainer still runs this often


def set_threads(n: int | None) -> None:
    """Size the tokenizers (Rayon) thread pool. Call before the first encode/train in this process."""
    if n:
        os.environ["RAYON_NUM_THREADS"] = str(int(n))
        os.environ["RAYON_RS_NUM_THREADS"] = str(int(n))
    os.environ["TOKENIZERS_PARALLELISM"] = "true"


# --------------------------------------------------------------------------------------------------
# tokenizers


def load_tokenizer(path: str):
    from tokenizers import Tokenizer

    if not os.path.isfile(path):
        raise DataError(f"{path}: tokenizer file does not exist")
    try:
        return Tokenizer.from_file(path)
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise DataError(f"{path}: not a valid tokenizer.json ({exc})") from None


def train_bpe(texts: Iterable[str | list[str]], vocab_size: int, min_frequency: int = 2, length: int | None = None,
              max_piece_bytes: int | None = MAX_PIECE_BYTES):
    """A byte-level BPE trained on `texts` (documents, or batches of documents; never one huge string).

    Ids 0 and 1 are `<|endoftext|>` and `<|pad|>`; all 256 byte symbols are in the vocabulary; `vocab_size`
    counts both. A small corpus may yield fewer merges than asked for: the vocabulary is then smaller.

    Training cuts every pre-tokenized piece (a word with its leading space, a run of digits, punctuation or
    whitespace) longer than `max_piece_bytes` into pieces of that many bytes, at fixed boundaries from its
    start (None: no cut). The trainer's time grows with the square of a piece's length, so a long text without
    whitespace (a base64 blob, a minified file) would otherwise stall it; no token is then longer than
    `max_piece_bytes`. Text whose pieces are all shorter trains exactly as without the cut, and the returned
    tokenizer pre-tokenizes (encodes) with the plain ByteLevel pre-tokenizer either way.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if max_piece_bytes is None:
        tok.pre_tokenizer = byte_level
    else:
        if int(max_piece_bytes) < 1:
            raise ValueError(f"max_piece_bytes must be positive, not {max_piece_bytes}")
        # after ByteLevel every character stands for one byte (none is a newline, which '.' would not match)
        cut = pre_tokenizers.Split(Regex(f".{{1,{int(max_piece_bytes)}}}"), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([byte_level, cut])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        min_frequency=int(min_frequency),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    tok.pre_tokenizer = byte_level
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    return tok


def _document_batches(documents_path: str, split: str | None, columns=("text",)) -> Iterator[dict[str, list]]:
    """documents.parquet rows of one split (None: every row) in file order, in batches of about BATCH_CHARS
    of text. Logs a line for every PROGRESS_CHARS of text read."""
    from .io import parquet_file

    pf = parquet_file(documents_path, "documents")
    out: dict[str, list] = {c: [] for c in columns}
    chars = total_chars = n_docs = 0
    for batch in pf.iter_batches(columns=["split", *[c for c in columns if c != "split"]], batch_size=1024):
        rows = batch.to_pydict()
        for i, s in enumerate(rows["split"]):
            if split is not None and s != split:
                continue
            for c in columns:
                out[c].append(rows[c][i])
            n = len(rows["text"][i]) if "text" in rows else 0
            chars += n
            n_docs += 1
            if (total_chars + n) // PROGRESS_CHARS > total_chars // PROGRESS_CHARS:
                log.info("%s: %s documents, %.0f MB of text read so far", documents_path, f"{n_docs:,}",
                         (total_chars + n) / 1e6)
            total_chars += n
            if chars >= BATCH_CHARS or len(out[columns[0]]) >= BATCH_DOCS:
                yield out
                out = {c: [] for c in columns}
                chars = 0
    if out[columns[0]]:
        yield out


def train_documents(documents_path: str, out_path: str, vocab_size: int, min_frequency: int = 2,
                    max_piece_bytes: int | None = MAX_PIECE_BYTES, split: str = "train",
                    key: str = "tokenizer") -> dict:
    """Train the BPE (train_bpe) on one split of documents.parquet in this process; write it atomically.

    Returns {"vocab_size", "documents", "characters"}. `key` names the config entry in errors."""
    from .io import atomic_path

    seen = {"documents": 0, "characters": 0}

    def batches():
        for b in _document_batches(documents_path, split):
            seen["documents"] += len(b["text"])
            seen["characters"] += sum(map(len, b["text"]))
            yield b["text"]
        log.info("%s: %s documents, %.0f MB of the %s split read; computing up to %d tokens", documents_path,
                 f"{seen['documents']:,}", seen["characters"] / 1e6, split, vocab_size)

    tok = train_bpe(batches(), vocab_size, min_frequency, max_piece_bytes=max_piece_bytes)
    if seen["documents"] == 0:
        raise DataError(f"{documents_path}: the {split} split has no documents to train {key} on")
    with atomic_path(out_path) as tmp:
        tok.save(tmp)
    return {"vocab_size": tok.get_vocab_size(with_added_tokens=True), **seen}


def _stoppable(cmd: list[str], what: str) -> dict:
    """Run a `python -m tokenfair.tokenization` child and return the JSON summary it prints.

    The parent waits with SIGINT and SIGTERM handled (in the main thread): either stops the child at once and
    exits with status 128 + the signal number, after the callers' cleanup (their temporary files go). The
    child's log lines go to this process's stderr (a job's log); a DataError in the child is raised here.
    """
    import tokenfair

    env = dict(os.environ)  # the child imports the same tokenfair as this process
    root = os.path.dirname(os.path.dirname(os.path.abspath(tokenfair.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        stderr = sys.stderr if sys.stderr.fileno() >= 0 else None
    except (AttributeError, OSError, ValueError):  # a stderr without a file (captured): the child inherits fd 2
        stderr = None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)

    def stop(signum, frame):
        name = signal.Signals(signum).name
        log.error("%s: stopped by %s; the trainer (pid %d) is ended, nothing is written", what, name, proc.pid)
        raise SystemExit(128 + signum)

    handled = (signal.SIGINT, signal.SIGTERM)
    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, stop) for s in handled}
    started = time.monotonic()
    try:
        while True:
            try:
                proc.wait(timeout=HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                log.info("%s: training, %.0f min so far", what, (time.monotonic() - started) / 60)
        out = proc.stdout.read()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if proc.poll() is None:
            proc.kill()  # SIGKILL: the child holds nothing to clean up (the caller removes its output)
            proc.wait()
        proc.stdout.close()
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        how = (f"killed by {signal.Signals(-proc.returncode).name} (out of memory?)" if proc.returncode < 0
               else f"exit status {proc.returncode}")
        raise RuntimeError(f"{what}: the tokenizer trainer failed ({how}): {' '.join(cmd)}") from None
    if "error" in result:
        raise DataError(result["error"])
    return result


def train_tokenizer(spec: dict, documents_path: str, out_path: str, tok_id: str = "tokenizer") -> dict:
    """Make results' tokenizer.json for one corpus x tokenizer: train a BPE on the train split (in a child
    process that SIGINT / SIGTERM stop at once), or copy a given file (checked). Written atomically. Returns a
    summary."""
    from .io import atomic_path

    key = f"tokenizers.{tok_id}"
    if spec["type"] == "bpe":
        max_piece = spec.get("max_piece_bytes", MAX_PIECE_BYTES)
        with atomic_path(out_path) as tmp:
            info = _stoppable([sys.executable, "-m", "tokenfair.tokenization", "--documents", documents_path,
                               "--vocab-size", str(spec["vocab_size"]),
                               "--min-frequency", str(spec.get("min_frequency", 2)),
                               "--max-piece-bytes", "none" if max_piece is None else str(max_piece),
                               "--key", key, "--out", tmp], f"{out_path} ({key})")
        size, n_docs = info["vocab_size"], info["documents"]
        if size < spec["vocab_size"]:
            log.warning("%s: the train split supports only %d of the %d tokens asked for (%s.vocab_size)",
                        documents_path, size, spec["vocab_size"], key)
        log.info("%s: byte-level BPE with %d tokens trained on %d documents", out_path, size, n_docs)
        return {"type": "bpe", "vocab_size": size, "documents": n_docs}
    src = spec["path"]
    with atomic_path(out_path) as tmp:
        try:
            shutil.copyfile(src, tmp)
        except OSError as exc:
            raise DataError(f"{src}: cannot copy the tokenizer file ({key}.path): {exc}") from None
        tok = load_tokenizer(tmp)
    size = vocab_size(tok)
    log.info("%s: copied from %s (%d ids)", out_path, src, size)
    return {"type": "file", "vocab_size": size}


def given_files(spec: dict) -> list[str]:
    """The tokenizer.json a `type: file` tokenizer copies (the workflow's input); [] for a trained one."""
    return [spec["path"]] if spec["type"] == "file" else []


def vocab_size(tok) -> int:
    """Number of ids (1 + the largest id, added tokens included)."""
    vocab = tok.get_vocab(with_added_tokens=True)
    return (max(vocab.values()) + 1) if vocab else 0


def token_strings(tok, size: int | None = None) -> list[str | None]:
    size = vocab_size(tok) if size is None else size
    return [tok.id_to_token(i) for i in range(size)]


def special_mask(tok, size: int | None = None) -> np.ndarray:
    """True for the tokenizer's special added tokens (a trained BPE: ids 0 and 1)."""
    size = vocab_size(tok) if size is None else size
    mask = np.zeros(size, dtype=bool)
    data = json.loads(tok.to_str())
    for added in data.get("added_tokens") or []:
        if added.get("special") and 0 <= added["id"] < size:
            mask[added["id"]] = True
    return mask


def special_ids(tok, spec: dict | None = None) -> dict[str, int | None]:
    """The end-of-document and padding ids of a tokenizer.

    `spec` is the config's tokenizer spec: `eod_token` / `pad_token` name the tokens explicitly; otherwise
    the first of EOD_CANDIDATES / PAD_CANDIDATES present in the vocabulary is used (None if none is).
    `tok` is a tokenizers.Tokenizer or a path to a tokenizer.json.
    """
    if isinstance(tok, (str, os.PathLike)):
        tok = load_tokenizer(os.fspath(tok))
    spec = spec or {}
    out: dict[str, int | None] = {}
    for kind, candidates in (("eod", EOD_CANDIDATES), ("pad", PAD_CANDIDATES)):
        given = spec.get(f"{kind}_token")
        if given is not None:
            tid = tok.token_to_id(given)
            if tid is None:
                raise DataError(f"{kind}_token {given!r} is not in the tokenizer's vocabulary")
            out[kind] = tid
            continue
        out[kind] = next((tok.token_to_id(c) for c in candidates if tok.token_to_id(c) is not None), None)
    return out


# --------------------------------------------------------------------------------------------------
# shards


def _encoder(tok):
    return getattr(tok, "encode_batch_fast", tok.encode_batch)


def encode_documents(tok, texts: list[str], eod_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Encode one batch of documents in parallel; returns (flat uint32 ids, per-document lengths with EOD)."""
    encs = _encoder(tok)(texts, add_special_tokens=False)
    extra = 0 if eod_id is None else 1
    lengths = np.fromiter((len(e.ids) + extra for e in encs), dtype=np.int64, count=len(encs))
    out = np.empty(int(lengths.sum()), dtype=np.uint32)
    pos = 0
    for e, n in zip(encs, lengths.tolist()):
        if extra:
            out[pos : pos + n - 1] = e.ids
            out[pos + n - 1] = eod_id
        else:
            out[pos : pos + n] = e.ids
        pos += n
    return out, lengths


# Peak resident memory of encode_split, measured (tokenizers 0.23, Python 3.11, x86-64 Linux) on one line of
# English (the speeches joined) with the default 4k BPE: 808 / 1460 / 2566 MB at 5 / 10 / 20 MB, the
# interpreter with pyarrow and the tokenizer about 260 MB of it. tokenizers keeps per byte and per token
# alignments of the document being encoded: about 115 MB per MB of it. 1000 documents of 20 kB (20 MB): 475 MB.
ENCODE_BASE_MB = 300
ENCODE_MB_PER_DOCUMENT_MB = 120  # the documents being encoded (two batches in flight)
ENCODE_MB_PER_TEXT_MB = 1.2  # the token ids held until written (4 bytes per token, about 3.7 bytes of text each)


def encode_memory_mb(n_bytes: int, largest_document_bytes: int | None = None) -> int:
    """Peak resident memory (MB) of encode_split on `n_bytes` of text whose largest document has
    `largest_document_bytes` (None: unknown, the worst case of one document of n_bytes).

    Up to two batches are encoded at once: the larger of two BATCH_CHARS batches and the largest document
    (a document is never split across batches) costs ENCODE_MB_PER_DOCUMENT_MB per MB; the whole shard's ids
    are held until written. An upper bound of the measurements above (20 MB in one line: 2566 MB measured,
    2724 given; in 20 kB documents: 475 measured, 804 given).
    """
    largest = n_bytes if largest_document_bytes is None else min(largest_document_bytes, n_bytes)
    in_flight = min(n_bytes, max(2 * BATCH_CHARS, largest))
    return int(ENCODE_BASE_MB + ENCODE_MB_PER_DOCUMENT_MB * in_flight / 1e6 + ENCODE_MB_PER_TEXT_MB * n_bytes / 1e6)


def encode_split(documents_path: str, tokenizer_path: str, split: str | None, tokens_path: str, index_path: str,
                 eod: bool = True, tokenizer_spec: dict | None = None, threads: int | None = None) -> dict:
    """Encode one split of documents.parquet into tokens/<split>.npy + .index.parquet, both atomically.

    split None: every document of the file, in file order (an evaluation-only corpus's ood/<corpus>.npy).
    """
    import pyarrow as pa
    from numpy.lib import format as npformat

    from .io import atomic_path, write_parquet

    if threads:
        set_threads(threads)
    tok = load_tokenizer(tokenizer_path)
    eod_id = None
    if eod:
        eod_id = special_ids(tok, tokenizer_spec)["eod"]
        if eod_id is None:
            raise DataError(
                f"{tokenizer_path}: the corpus has eod: true but the tokenizer has no end-of-document token "
                f"(none of {', '.join(EOD_CANDIDATES)}); set eod_token in its tokenizers entry"
            )
    size = vocab_size(tok)
    if size > 2**32:
        raise DataError(f"{tokenizer_path}: {size} ids do not fit uint32")
    chunks: list[np.ndarray] = []
    doc_ids: list[str] = []
    lengths: list[np.ndarray] = []
    chars = 0
    # Two batches in flight (encode_batch releases the GIL): the thread pool picks up the next batch while
    # the last documents of one finish, and the Python-side copy into numpy overlaps with encoding.
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: deque = deque()
        for batch in _document_batches(documents_path, split, columns=("doc_id", "text")):
            longest = max(map(len, batch["text"]))
            if longest > BATCH_CHARS:
                log.info("%s: encoding a document of %.0f MB (about %d MB of memory)", tokens_path, longest / 1e6,
                         encode_memory_mb(longest))
            pending.append(pool.submit(encode_documents, tok, batch["text"], eod_id))
            doc_ids += batch["doc_id"]
            chars += sum(map(len, batch["text"]))
            if len(pending) >= 2:
                ids, lens = pending.popleft().result()
                chunks.append(ids)
                lengths.append(lens)
        while pending:
            ids, lens = pending.popleft().result()
            chunks.append(ids)
            lengths.append(lens)
    if not doc_ids:
        which = "it" if split is None else f"the {split} split"
        raise DataError(f"{documents_path}: {which} has no documents")
    length = np.concatenate(lengths)
    start = np.zeros_like(length)
    np.cumsum(length[:-1], out=start[1:])
    total = int(length.sum())
    with atomic_path(tokens_path) as tmp, open(tmp, "wb") as fh:
        npformat.write_array_header_1_0(fh, {"descr": npformat.dtype_to_descr(np.dtype(np.uint32)),
                                             "fortran_order": False, "shape": (total,)})
        for c in chunks:
            fh.write(memoryview(np.ascontiguousarray(c)).cast("B"))
    write_parquet(
        pa.table({"doc_id": pa.array(doc_ids, pa.string()), "start": pa.array(start, pa.int64()),
                  "length": pa.array(length, pa.int64())}),
        index_path,
    )
    log.info("%s: %d documents, %d characters -> %d tokens", tokens_path, len(doc_ids), chars, total)
    return {"documents": len(doc_ids), "characters": chars, "tokens": total}


def load_tokens(path: str, mmap: bool = True) -> np.ndarray:
    """A token shard as a 1-D uint32 array (memory-mapped, read-only, by default)."""
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a token shard ({exc})") from None
    if arr.dtype != np.uint32 or arr.ndim != 1:
        raise DataError(f"{path}: a token shard must be a 1-D uint32 array, not {arr.dtype} {arr.shape}")
    return arr


def load_index(path: str):
    """tokens/<split>.index.parquet as a pyarrow Table (doc_id, start, length)."""
    from .io import read_parquet

    return read_parquet(path, what="the token index")


def docs_end(index_path: str, n_docs: int) -> int:
    """Where the first `n_docs` documents of a token index end in its shard (start + length of document
    n_docs, in the shard's order): the prefix a run with train.train_docs trains on. DataError naming
    train.train_docs when the split has fewer documents."""
    index = load_index(index_path)
    if n_docs > index.num_rows:
        raise DataError(f"{index_path}: train.train_docs is {n_docs}, but the train split has only "
                        f"{index.num_rows} documents")
    return int(index.column("start")[n_docs - 1].as_py() + index.column("length")[n_docs - 1].as_py())


# --------------------------------------------------------------------------------------------------
# a given tokenizer made from an embedded corpus (tokenizers/, see its README)


def train_embedded(name: str, vocab_size: int, out_path: str, min_frequency: int = 2,
                   threads: int | None = None, max_piece_bytes: int | None = MAX_PIECE_BYTES) -> dict:
    """Train the project's byte-level BPE (train_bpe) on every document of an embedded corpus and write its
    tokenizer.json atomically. The documents are those of prepare (normalised, not lowercased, deduplicated)
    in doc_id order, so the file is a function of the corpus text, the vocabulary size and the tokenizers
    version."""
    from .corpus import build_documents, iter_documents
    from .io import atomic_path

    set_threads(threads)
    spec = {"source": "embedded", "name": name, "validation_fraction": 0.0, "test_fraction": 0.0}
    texts = build_documents(iter_documents(spec, name), spec, name)["text"]
    tok = train_bpe(texts, vocab_size, min_frequency, max_piece_bytes=max_piece_bytes)
    size = tok.get_vocab_size(with_added_tokens=True)  # (the argument vocab_size hides the function here)
    with atomic_path(out_path) as tmp:
        tok.save(tmp)
    log.info("%s: byte-level BPE with %d tokens trained on %d documents of embedded corpus %s", out_path,
             size, len(texts), name)
    return {"vocab_size": size, "documents": len(texts), "characters": sum(map(len, texts))}


def _piece_limit(value: str) -> int | None:
    return None if value.lower() == "none" else int(value)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tokenfair.tokenization",
        description="Train the project's byte-level BPE (<|endoftext|> = 0, <|pad|> = 1) on every document of "
                    "an embedded corpus, or on the train split of a documents.parquet, and write its "
                    "tokenizer.json. Prints a JSON line on stdout: the summary, or {\"error\": ...} (status 1).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--train-embedded", metavar="NAME", help="embedded corpus (e.g. pydoc)")
    source.add_argument("--documents", metavar="PARQUET", help="a documents.parquet: its train split")
    parser.add_argument("--vocab-size", required=True, type=int, help="ids, byte symbols and special tokens included")
    parser.add_argument("--min-frequency", type=int, default=2, help="least count of a merged pair (default 2)")
    parser.add_argument("--max-piece-bytes", type=_piece_limit, default=MAX_PIECE_BYTES,
                        help=f"cut longer pre-tokenized pieces for training (default {MAX_PIECE_BYTES}; none: no cut)")
    parser.add_argument("--key", default="tokenizer", help="the config entry errors name (--documents)")
    parser.add_argument("--out", required=True, help="the tokenizer.json to write")
    parser.add_argument("--threads", type=int, default=None, help="tokenizers threads (default: all cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    set_threads(args.threads)
    try:
        if args.documents is not None:
            info = train_documents(args.documents, args.out, args.vocab_size, args.min_frequency,
                                   args.max_piece_bytes, key=args.key)
        else:
            info = train_embedded(args.train_embedded, args.vocab_size, args.out, args.min_frequency, args.threads,
                                  args.max_piece_bytes)
    except DataError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    if args.train_embedded is not None and info["vocab_size"] < args.vocab_size:
        log.warning("%s: the corpus supports only %d of the %d tokens asked for", args.out, info["vocab_size"],
                    args.vocab_size)
    print(json.dumps(info), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
