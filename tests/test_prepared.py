"""Corpora larger than memory: the prepared binary file, its metadata and the memory-mapped batches."""
import json
import os

import numpy as np
import pytest
import torch
from conftest import run_command, tiny_run_args

from gptlib.corpus import UNKNOWN_CHAR, TextDataset, prepared_dataset, prepared_paths
from gptlib.errors import UserError


@pytest.fixture
def corpus_file(tmp_path, shakespeare_path):
    path = tmp_path / "corpus.txt"
    path.write_text(shakespeare_path.read_text(encoding="utf-8")[:120_000], encoding="utf-8")
    return path


def test_memory_mapped_batches_equal_in_memory_batches(corpus_file):
    mapped = prepared_dataset(str(corpus_file))
    in_memory = TextDataset.from_text(corpus_file.read_text(encoding="utf-8"))
    assert isinstance(mapped.splits["train"], np.memmap)
    assert mapped.vocab.chars == in_memory.vocab.chars
    for split in ("train", "val"):
        for seed in range(3):
            a = mapped.get_batch(split, 8, 32, torch.Generator().manual_seed(seed), rank=1, world_size=2)
            b = in_memory.get_batch(split, 8, 32, torch.Generator().manual_seed(seed), rank=1, world_size=2)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
            assert a[0].dtype == torch.long


def test_metadata_records_the_source_and_the_file_is_compact(corpus_file):
    prepared_dataset(str(corpus_file))
    bin_path, meta_path = prepared_paths(str(corpus_file))
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    assert meta["tokens"] == 120_000 and meta["dtype"] == "uint8" and bin_path.stat().st_size == 120_000
    import hashlib
    assert meta["source_sha256"] == hashlib.sha256(corpus_file.read_bytes()).hexdigest()
    assert meta["replaced_chars"] == 0 and meta["unknown_char"] is None


def test_a_large_vocabulary_uses_uint16(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_text("".join(chr(0x4E00 + i % 400) for i in range(5000)), encoding="utf-8")
    dataset = prepared_dataset(str(path))
    assert dataset.prepared["dtype"] == "uint16" and len(dataset.vocab) == 400
    x, _ = dataset.get_batch("train", 2, 8, torch.Generator().manual_seed(0))
    assert x.max() < 400


def test_rare_characters_become_the_unknown_character(tmp_path, capsys):
    path = tmp_path / "rare.txt"
    path.write_text("abab" * 500 + "zé", encoding="utf-8")
    dataset = prepared_dataset(str(path), min_char_count=2)
    assert dataset.vocab.chars == ["a", "b", UNKNOWN_CHAR]
    assert dataset.prepared["replaced_chars"] == 2 and dataset.prepared["rare_chars"] == 2
    assert dataset.vocab.decode(np.asarray(dataset.splits["val"][-2:]).tolist()) == UNKNOWN_CHAR * 2
    assert "2 rare character(s)" in capsys.readouterr().out


def test_prepared_once_reused_and_redone_when_the_source_changes(corpus_file, capsys):
    prepared_dataset(str(corpus_file))
    assert "prepared" in capsys.readouterr().out
    bin_path, _ = prepared_paths(str(corpus_file))
    first_write = bin_path.stat().st_mtime_ns
    prepared_dataset(str(corpus_file))
    assert capsys.readouterr().out == "" and bin_path.stat().st_mtime_ns == first_write  # reused
    os.utime(corpus_file, ns=(first_write + 10**9, first_write + 10**9))  # touched, same bytes
    prepared_dataset(str(corpus_file))
    assert "changed" not in capsys.readouterr().out
    corpus_file.write_text(corpus_file.read_text(encoding="utf-8").replace("a", "o"), encoding="utf-8")
    dataset = prepared_dataset(str(corpus_file))
    assert "changed since it was prepared" in capsys.readouterr().out
    assert "a" not in dataset.vocab.chars
    prepared_dataset(str(corpus_file), min_char_count=5)  # other settings: prepared again
    assert "prepared" in capsys.readouterr().out


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        prepared_dataset(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="is empty"):
        prepared_dataset(str(tmp_path / "empty.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1") * 10)
    with pytest.raises(UserError, match="not UTF-8.*byte 3 is 0xe9"):
        prepared_dataset(str(tmp_path / "latin1.txt"))
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_training_through_the_memory_map_from_the_command_line(tmp_path, corpus_file):
    out = tmp_path / "m.pt"
    result = run_command("gpt_final_version.py", *tiny_run_args(corpus_file, out, max_iters=10), "--memmap=true")
    assert result.returncode == 0, result.stderr
    assert "memory-mapped from" in result.stdout and out.is_file()
    plain = run_command("gpt_final_version.py", *tiny_run_args(corpus_file, tmp_path / "p.pt", max_iters=10))
    final = [line for line in result.stdout.splitlines() if line.startswith("final:")][0]
    plain_final = [line for line in plain.stdout.splitlines() if line.startswith("final:")][0]
    # same batches, same model: the same losses as the in-memory run
    assert final.split("params")[0] == plain_final.split("params")[0]
