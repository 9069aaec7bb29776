"""The tokenize job's memory request follows the text it encodes (tokenfair.resources.tokenize_resources,
from tokenfair.tokenization.encode_memory_mb), as planned by `snakemake -n`."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import minimal_config, run_snakemake, write_config
from tokenfair import resources as tfres
from tokenfair.tokenization import encode_memory_mb


def write_documents(path, texts_by_split: dict[str, list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [(f"{split}{i}", split, t) for split, texts in texts_by_split.items() for i, t in enumerate(texts)]
    pq.write_table(pa.table({"doc_id": [r[0] for r in rows], "split": [r[1] for r in rows],
                             "text": [r[2] for r in rows], "source": ["x"] * len(rows)}), path)


def test_encode_memory_formula():
    assert encode_memory_mb(0) == 300
    # 20 MB in one line: 2566 MB measured; in 20 kB documents: 475 MB measured
    assert encode_memory_mb(20_000_000) == 2724 and encode_memory_mb(20_000_000, 20_000) == 804
    assert encode_memory_mb(20_000_000, 10**9) == encode_memory_mb(20_000_000)  # never above the whole text


def test_tokenize_memory_from_the_split_and_attempt(tmp_path):
    docs = tmp_path / "documents.parquet"
    write_documents(docs, {"train": ["é" * 3_000_000, "b" * 1000], "validation": ["c" * 10_000] * 3})
    assert tfres.documents_text_bytes(str(docs), "train") == (6_001_000, 6_000_000)  # bytes, not characters
    assert tfres.documents_text_bytes(str(docs), None) == (6_031_000, 6_000_000)  # tokenize_ood: every document

    class Input:
        documents = str(docs)

    mem = tfres.tokenize_resources(tfres.Site())["mem_mb"]
    assert mem({"split": "train"}, Input, 1) == encode_memory_mb(6_001_000, 6_000_000)
    assert mem({"split": "train"}, Input, 2) == 2 * encode_memory_mb(6_001_000, 6_000_000)
    assert mem({"split": "validation"}, Input, 1) == encode_memory_mb(30_000, 10_000)
    with pytest.raises(FileNotFoundError) as exc:  # Snakemake's dry run shows it as <TBD>
        mem({"split": "train"}, type("Missing", (), {"documents": str(tmp_path / "none.parquet")}), 1)
    assert exc.value.filename == str(tmp_path / "none.parquet")


def test_dry_run_asks_more_memory_for_a_bigger_document(tmp_path):
    write_config(tmp_path, minimal_config({"c": {"source": "embedded"}}))
    planned = {}
    for name, train in (("small", ["word " * 200] * 50), ("big", ["word " * 1_000_000])):
        write_documents(tmp_path / "results" / "c" / "documents.parquet", {"train": train, "validation": ["v"]})
        res = run_snakemake(tmp_path, "-n", "results/c/tok~bpe/tokens/train.npy")
        out = res.stdout + res.stderr
        assert res.returncode == 0, out
        planned[name] = int(re.search(r"rule tokenize:.*?mem_mb=(\d+)", out, re.S).group(1))
    assert planned == {"small": encode_memory_mb(50_000, 1000), "big": encode_memory_mb(5_000_000)}
