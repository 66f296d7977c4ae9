"""Tokenizers (issue 13 item 1): GPT-2's ids as tiktoken gives them, BPE's two trainers agree,
specials only on purpose, the tokenizer travels in the checkpoint, streamed text comes out whole,
bits per byte compare across tokenizers."""
import json
import math
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import SHAKESPEARE, tiny_run_args
from hypothesis import given, settings
from hypothesis import strategies as st

import gpt_final_version
from gptlib import tokenizer
from gptlib.corpus import END_MARK, INPUT_MARK, OUTPUT_MARK
from gptlib.errors import UserError
from gptlib.tokenizer import TextStream
from model_handler import ModelHandler


def _gpt2_dir() -> Path | None:
    """GPT-2's real tokenizer files: $GPT2_TOKENIZER, else shared/data/gpt2 beside the corpus."""
    if os.environ.get("GPT2_TOKENIZER"):
        return Path(os.environ["GPT2_TOKENIZER"])
    return None if SHAKESPEARE is None else SHAKESPEARE.parent.parent / "gpt2"


GPT2_DIR = _gpt2_dir()
needs_gpt2 = pytest.mark.skipif(GPT2_DIR is None or not (GPT2_DIR / "encoder.json").is_file(),
                                reason="GPT-2's encoder.json + vocab.bpe not found (set GPT2_TOKENIZER=DIR)")


@pytest.fixture(scope="module")
def gpt2():
    return tokenizer.GPT2Tokenizer.from_directory(str(GPT2_DIR))


@pytest.fixture(scope="module")
def bpe(shakespeare_text):
    return tokenizer.ByteBPE.train(shakespeare_text[:50_000], 400)


@pytest.fixture(scope="module")
def shakespeare_text():
    if SHAKESPEARE is None or not SHAKESPEARE.is_file():
        pytest.fail("tiny-shakespeare not found (see tests/conftest.py)")
    return SHAKESPEARE.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# GPT-2's own


@needs_gpt2
def test_gpt2_gives_tiktokens_ids(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert len(gpt2) == 50257 and gpt2.specials == {"<|endoftext|>": 50256}


@needs_gpt2
def test_gpt2_counts_tiny_shakespeare_as_nanogpt_does(gpt2, shakespeare_text):
    cut = int(0.9 * len(shakespeare_text))
    assert len(gpt2.encode(shakespeare_text[:cut])) == 301_966
    assert len(gpt2.encode(shakespeare_text[cut:])) == 36_059


@needs_gpt2
def test_the_hubs_file_names_and_tokenizer_json_give_the_same_ids(gpt2, tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir()
    shutil.copy(GPT2_DIR / "encoder.json", hub / "vocab.json")
    shutil.copy(GPT2_DIR / "vocab.bpe", hub / "merges.txt")
    one_file = tmp_path / "one"
    one_file.mkdir()
    lines = (GPT2_DIR / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    (one_file / "tokenizer.json").write_text(json.dumps({
        "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "special": True}],
        "model": {"type": "BPE", "vocab": json.loads((GPT2_DIR / "encoder.json").read_text(encoding="utf-8")),
                  "merges": [line for line in lines[1:] if line]}}), encoding="utf-8")
    text = "Hello world, it's 2026!  Ünïcode\n\tand 😀"
    for folder in (hub, one_file):
        other = tokenizer.GPT2Tokenizer.from_directory(str(folder))
        assert other.encode(text) == gpt2.encode(text) and other.specials == gpt2.specials


def test_a_folder_without_tokenizer_files_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="encoder.json"):
        tokenizer.GPT2Tokenizer.from_directory(str(tmp_path))


# ----------------------------------------------------------------------------------------------
# Any text round-trips; specials come only on purpose


@needs_gpt2
@settings(max_examples=60, deadline=None)
@given(st.text())
def test_gpt2_round_trips_any_text(gpt2, text):
    assert gpt2.decode(gpt2.encode(text)) == text


@settings(max_examples=60, deadline=None)
@given(st.text())
def test_trained_bpe_round_trips_any_text(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", " ", "<|endoftext|>", INPUT_MARK, OUTPUT_MARK, END_MARK, "é"])).map("".join))
def test_typed_text_never_becomes_a_special_token(bpe, text):
    assert not set(bpe.encode(text)) & set(bpe.specials.values())
    assert bpe.decode(bpe.encode(text)) == text


@needs_gpt2
def test_a_typed_endoftext_is_ordinary_text_and_encode_with_specials_is_the_way_in(gpt2, bpe):
    assert 50256 not in gpt2.encode("<|endoftext|>")
    assert gpt2.encode_with_specials("a<|endoftext|>b") == [64, 50256, 65]
    laid_out = bpe.encode_with_specials(INPUT_MARK + "hi" + OUTPUT_MARK + "yo" + END_MARK)
    assert [t for t in laid_out if t in bpe.specials.values()] == [bpe.specials[m] for m in (INPUT_MARK, OUTPUT_MARK, END_MARK)]
    assert bpe.decode(laid_out) == INPUT_MARK + "hi" + OUTPUT_MARK + "yo" + END_MARK


def test_specials_come_after_the_merges(bpe):
    assert len(bpe) == 400
    assert sorted(bpe.specials.values()) == [397, 398, 399]
    assert max(new for _, _, new in bpe.merges) == 396


# ----------------------------------------------------------------------------------------------
# The two trainers


def test_the_fast_trainer_learns_the_readable_ones_merges_on_shakespeare(shakespeare_text):
    chunks = tokenizer.chunk_counts(shakespeare_text[:30_000])
    readable = tokenizer.train_merges_readable(chunks, 80)
    assert tokenizer.train_merges_fast(chunks, 80) == readable
    assert len(readable) == 80


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="ab c\n", max_size=60), st.integers(1, 30))
def test_the_fast_trainer_learns_the_readable_ones_merges_ties_included(text, n_merges):
    chunks = tokenizer.chunk_counts(text)
    assert tokenizer.train_merges_fast(chunks, n_merges) == tokenizer.train_merges_readable(chunks, n_merges)


def test_training_stops_when_nothing_is_left_to_merge():
    tok = tokenizer.ByteBPE.train("ab ab ab", 1000)
    assert tok.encode("ab ab") == [tok.encode("ab")[0], tok.encode(" ab")[0]]
    assert len(tok) < 1000


def test_a_vocabulary_too_small_for_bytes_and_markers_is_refused():
    with pytest.raises(UserError, match="at least 259"):
        tokenizer.ByteBPE.train("hello", 258)


# ----------------------------------------------------------------------------------------------
# In the checkpoint


def _through_torch_save(state, tmp_path):
    torch.save({"tokenizer": state}, tmp_path / "t.pt")
    return torch.load(tmp_path / "t.pt", weights_only=True)["tokenizer"]


@needs_gpt2
def test_every_tokenizer_survives_a_weights_only_checkpoint(tmp_path, bpe, gpt2):
    text = "To be, or not to be: 😀 ünïcode"
    for tok in (tokenizer.CharTokenizer.from_text(text), bpe, gpt2):
        again = tokenizer.from_state(_through_torch_save(tok.state(), tmp_path))
        assert type(again) is type(tok) and len(again) == len(tok)
        assert again.encode(text) == tok.encode(text) and again.specials == tok.specials


def test_a_checkpoint_from_before_tokenizers_has_characters():
    tok = tokenizer.from_checkpoint({"vocab": ["\n", "a", "b"]})
    assert tok.kind == "char" and tok.encode("ab\n") == [1, 2, 0]


# ----------------------------------------------------------------------------------------------
# Streaming


@needs_gpt2
def test_an_emoji_over_two_tokens_is_streamed_whole(gpt2):
    ids = gpt2.encode("hi 😀!")
    assert len(ids) == 4  # "hi", " " + 3 bytes of the emoji, its last byte, "!"
    stream = tokenizer.StreamDecoder(gpt2)
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert pieces == ["hi", " ", "😀", "!", ""]


def test_an_unfinished_character_is_flushed_as_a_replacement(bpe):
    stream = tokenizer.StreamDecoder(bpe)
    assert stream.push(bpe.encode("😀")[0]) == ""
    assert stream.flush() == "\ufffd"


@needs_gpt2
def test_model_handlers_text_stream_gives_whole_characters(gpt2):
    class Tokens(list):
        finish_reason = "length"

    stream = TextStream(Tokens(gpt2.encode(" 😀😀")), gpt2, prompt_tokens=1)
    assert list(stream) == [" ", "😀", "😀"]
    assert stream.completion().text == " 😀😀"


# ----------------------------------------------------------------------------------------------
# Training, sampling, bits per byte


def test_a_bpe_run_saves_its_tokenizer_and_model_handler_samples_from_it(small_corpus, tmp_path):
    out = tmp_path / "bpe.pt"
    result = gpt_final_version.main(tiny_run_args(small_corpus, out, max_iters=10, tokenizer="bpe", vocab_size=300))
    saved = torch.load(out, weights_only=True)
    assert saved["tokenizer"]["kind"] == "bpe" and "vocab" not in saved
    assert saved["model_config"]["vocab_size"] == 300
    handler = ModelHandler(str(out), "cpu").load()
    assert len(handler.vocab) == 300
    sample = handler.generate("ROMEO: 😀", max_new_tokens=20, seed=1)[0]
    assert sample.startswith("ROMEO: 😀") and len(handler.vocab.encode(sample)) >= 20
    assert math.isfinite(result.val_bpb)


def test_a_resumed_or_fine_tuned_bpe_run_keeps_its_tokenizer(small_corpus, tmp_path):
    first = tmp_path / "a.pt"
    gpt_final_version.main(tiny_run_args(small_corpus, first, max_iters=4, tokenizer="bpe", vocab_size=300))
    second = tmp_path / "b.pt"
    gpt_final_version.main(tiny_run_args(small_corpus, second, max_iters=8, resume=first))
    assert torch.load(second, weights_only=True)["tokenizer"] == torch.load(first, weights_only=True)["tokenizer"]
    with pytest.raises(UserError, match="cannot change"):
        gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "c.pt", max_iters=12, resume=first, tokenizer="char"))
    tuned = tmp_path / "d.pt"  # fine-tuning (--init_from) takes the tokenizer with the weights
    gpt_final_version.main(tiny_run_args(small_corpus, tuned, max_iters=2, init_from=first))
    assert torch.load(tuned, weights_only=True)["tokenizer"] == torch.load(first, weights_only=True)["tokenizer"]


def test_bits_per_byte_of_a_character_model_on_ascii_text_is_loss_over_ln2(small_corpus, tmp_path, capsys):
    result = gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "c.pt", max_iters=5))
    assert result.val_bpb == pytest.approx(result.val_loss / math.log(2), rel=1e-9)
    printed = capsys.readouterr().out
    assert f"val_bpb={result.val_bpb:.4f}" in printed.splitlines()[-1]
    assert f"val loss {result.val_loss:.4f} = {result.val_bpb:.4f} bits per byte" in printed
    assert f"val_bpb={result.val_bpb:.4f}" in (tmp_path / "notes.txt").read_text()


def test_bits_per_byte_counts_the_bytes_a_token_stands_for(bpe):
    from gptlib import run_report
    from gptlib.corpus import TextDataset

    text = "the king, the queen; " * 50
    dataset = TextDataset.from_text(text, bpe)
    ids = dataset.splits["val"].tolist()
    assert dataset.bytes_per_token("val") == pytest.approx(len(bpe.decode_bytes(ids)) / len(ids))
    assert run_report.bits_per_byte(2.0, dataset, "val") == pytest.approx(2.0 * len(ids) / len(bpe.decode_bytes(ids)) / math.log(2))


# ----------------------------------------------------------------------------------------------
# Mistakes and the optional extra


def test_without_the_regex_package_bpe_says_what_to_install_and_characters_still_train(small_corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "regex", None)  # `import regex` now fails, as when it is not installed
    with pytest.raises(UserError, match="pip install -r requirements-pretrained.txt"):
        gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "b.pt", max_iters=2, tokenizer="bpe"))
    result = gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "c.pt", max_iters=2))
    assert result.iters == 2


def test_bad_tokenizer_options_are_one_clear_error(small_corpus, tmp_path):
    cases = [(dict(tokenizer="bpe", vocab_size=100), "at least 259"),
             (dict(tokenizer="bp"), "did you mean 'bpe'"),
             (dict(vocab_size=100), "is for --tokenizer=bpe"),
             (dict(tokenizer="gpt2", vocab_size=512), "GPT-2's 50,257 tokens"),
             (dict(tokenizer="gpt2", tokenizer_dir=tmp_path / "nowhere"), "--tokenizer_dir")]
    for options, message in cases:
        with pytest.raises(UserError, match=message):
            gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "x.pt", max_iters=2, **options))


def test_chat_pairs_stay_on_characters_for_now(tmp_path):
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(json.dumps({"input": "hi", "output": "yo"}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="chat pairs"):
        gpt_final_version.main(tiny_run_args(pairs, tmp_path / "x.pt", tokenizer="bpe"))


def test_tokenizer_files_that_do_not_fit_together_are_one_clear_error():
    encoder = {ch: i for i, ch in enumerate(tokenizer.bytes_to_unicode())}
    with pytest.raises(UserError, match="do not fit together"):
        tokenizer.GPT2Tokenizer.from_tables(encoder, [["a", "b"]], {})
