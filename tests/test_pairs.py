"""Training on chat pairs: the layout, the loss mask, held-out pairs and vocabulary extension."""
import json

import pytest
import torch
from conftest import run_command, tiny_run_args

from config import GPTConfig
from gpt_final_version import GPT
from gptlib.checkpoint import load_checkpoint
from gptlib.corpus import (
    END_MARK,
    INPUT_MARK,
    OUTPUT_MARK,
    layout_pair,
    pairs_dataset,
    pairs_vocab,
    read_pairs,
)
from gptlib.errors import UserError

PAIRS = [("are you coming tonight?", "yes!! bringing cake"), ("what time?", "around 10"),
         ("did you see the match", "no, spoilers please"), ("lunch?", "sure, 1pm"),
         ("how was porto", "sunny and loud"), ("call me later", "ok")] * 4


def write_pairs(path, pairs, extra_lines=()):
    lines = [json.dumps({"input": a, "output": b}) for a, b in pairs] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_layout_learns_the_reply_and_the_end_marker_only():
    text, learned = layout_pair("hi", "yo")
    assert text == INPUT_MARK + "hi" + OUTPUT_MARK + "yo" + END_MARK
    assert [ch for ch, keep in zip(text, learned) if keep] == ["y", "o", END_MARK]


def test_batches_mask_their_side_and_keep_the_end_marker_as_a_target():
    vocab = pairs_vocab(PAIRS)
    dataset = pairs_dataset(PAIRS, vocab)
    x, y = dataset.get_batch("train", 64, 16, torch.Generator().manual_seed(0))
    learned_targets = set(vocab.decode(y[y >= 0].tolist()))
    replies = set("".join(b for _, b in PAIRS))
    assert learned_targets <= replies | {END_MARK}
    assert END_MARK in learned_targets
    assert not learned_targets & {INPUT_MARK, OUTPUT_MARK}
    assert (y == -1).any()  # their side is there and masked
    # every masked target is a character of their side or a marker the model is given
    theirs = set("".join(a for a, _ in PAIRS)) | {INPUT_MARK, OUTPUT_MARK}
    shifted = torch.cat([x[:, 1:], torch.full((x.shape[0], 1), -1)], dim=1)
    masked = shifted[(y == -1)[:, :] & (shifted >= 0)]
    assert set(vocab.decode(masked.tolist())) <= theirs


def test_masked_positions_add_nothing_to_loss_or_gradient_and_the_end_marker_does():
    vocab = pairs_vocab(PAIRS)
    dataset = pairs_dataset(PAIRS, vocab)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=32, n_embd=32, n_head=2, n_layer=1, dropout=0.0))
    x, y = dataset.get_batch("train", 8, 32, torch.Generator().manual_seed(1))
    logits, loss = model(x, y)
    logits.retain_grad()
    loss.backward()
    keep = y >= 0
    by_hand = torch.nn.functional.cross_entropy(logits[keep], y[keep])
    assert torch.allclose(loss, by_hand)
    assert logits.grad[~keep].abs().max() == 0  # masked positions: no gradient at all
    end_positions = y == vocab.index[END_MARK]
    assert end_positions.any() and logits.grad[end_positions].abs().sum() > 0


def test_a_batch_with_nothing_to_learn_has_loss_zero_not_nan():
    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_embd=8, n_head=2, n_layer=1))
    _, loss = model(torch.zeros(2, 4, dtype=torch.long), torch.full((2, 4), -1))
    assert loss.item() == 0.0


def test_val_is_held_out_pairs_starting_at_a_pair_boundary():
    distinct = [(f"question {i}", f"answer {i}") for i in range(30)]
    dataset = pairs_dataset(distinct, pairs_vocab(distinct))
    train, val = dataset.pairs["train"], dataset.pairs["val"]
    assert len(val) == 3 and not set(train) & set(val) and sorted(train + val) == sorted(distinct)
    assert dataset.vocab.decode(dataset.splits["val"][:1].tolist()) == INPUT_MARK
    val_text = dataset.vocab.decode(dataset.splits["val"].tolist())
    assert val_text == "".join(layout_pair(a, b)[0] for a, b in val)


def test_read_pairs_skips_bad_lines_and_refuses_a_file_without_pairs(tmp_path, capsys):
    path = write_pairs(tmp_path / "p.jsonl", PAIRS[:2], ['{"input": "x"}', "not json", '{"input": 1, "output": "y"}'])
    assert read_pairs(str(path)) == PAIRS[:2]
    assert "skipped 3 line(s)" in capsys.readouterr().out
    (tmp_path / "none.jsonl").write_text("[1, 2]\n")
    with pytest.raises(UserError, match="holds no .*pairs.*chat_data.py"):
        read_pairs(str(tmp_path / "none.jsonl"))


def test_markers_written_in_a_pair_cannot_fake_a_turn(tmp_path):
    path = write_pairs(tmp_path / "p.jsonl", [("a" + END_MARK + "b", "c" + INPUT_MARK)])
    assert read_pairs(str(path)) == [("a b", "c ")]


@pytest.mark.slow
def test_fine_tuning_extends_the_vocabulary_and_keeps_trained_rows(tmp_path, small_corpus):
    base = tmp_path / "base.pt"
    result = run_command("gpt_final_version.py", *tiny_run_args(small_corpus, base, max_iters=20))
    assert result.returncode == 0, result.stderr
    pairs = write_pairs(tmp_path / "me.jsonl", PAIRS + [("ça va?", "très bien")])
    tuned = tmp_path / "tuned.pt"
    result = run_command("gpt_final_version.py", *tiny_run_args(pairs, tuned, max_iters=0, preset="none"),
                         f"--init_from={base}")
    assert result.returncode == 0, result.stderr
    assert "val loss of replies only (held-out pairs)" in result.stdout
    old, new = load_checkpoint(str(base)), load_checkpoint(str(tuned))
    n = len(old["vocab"])
    assert new["vocab"][:n] == old["vocab"]  # known characters keep their ids
    written = set("".join(a + b for a, b in PAIRS)) | set("ça va?très bien")
    assert set(new["vocab"][n:]) == (written | {INPUT_MARK, OUTPUT_MARK, END_MARK}) - set(old["vocab"])
    assert {"ç", "è", END_MARK} <= set(new["vocab"][n:])
    assert new["model_config"]["n_embd"] == old["model_config"]["n_embd"]  # the shape comes from the checkpoint
    for name in ("token_embedding.weight", "lm_head.weight", "lm_head.bias"):
        assert torch.equal(new["model"][name][:n], old["model"][name])
        assert new["model"][name].shape[0] == len(new["vocab"])


@pytest.mark.slow
def test_resuming_a_pairs_run_with_new_characters_points_to_init_from(tmp_path):
    pairs = write_pairs(tmp_path / "me.jsonl", PAIRS)
    out = tmp_path / "me.pt"
    result = run_command("gpt_final_version.py", *tiny_run_args(pairs, out, max_iters=5, block_size=16))
    assert result.returncode == 0, result.stderr
    assert "chat pairs: 22 train / 2 held-out val" in result.stdout
    more = write_pairs(tmp_path / "more.jsonl", PAIRS + [("¿qué?", "nada")])
    result = run_command("gpt_final_version.py", f"--resume={out}", f"--data={more}", "--max_iters=6",
                         f"--out={tmp_path / 'again.pt'}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--init_from" in result.stderr and "'¿'" in result.stderr
