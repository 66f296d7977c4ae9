"""bench_minutes.py: the whole-split score is the mean loss over every val token, and its options
are checked before anything trains."""
import pytest
import torch

from benchmarks import bench_minutes
from config import GPTConfig
from gpt_final_version import GPT
from gptlib.errors import UserError


def test_the_whole_split_loss_scores_every_token_once_in_consecutive_windows():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, block_size=5, n_layer=1, n_head=1, n_embd=8, dropout=0.0)).eval()
    ids = torch.randint(7, (23,), generator=torch.Generator().manual_seed(1))  # 22 targets: 4 windows of 5, 2 left
    expected = []
    for start in range(0, 20, 5):
        logits, _ = model(ids[start:start + 5].view(1, 5))
        expected += torch.nn.functional.cross_entropy(logits[0], ids[start + 1:start + 6], reduction="none").tolist()
    got = bench_minutes.whole_split_loss(model, ids, 5, batch=3)  # batches of 3 windows: 3 + 1
    assert got == pytest.approx(sum(expected) / 20, rel=1e-5)


def test_unknown_options_and_levers_are_refused_with_the_valid_ones():
    with pytest.raises(UserError, match="unknown lever.*muonn.*levers: base"):
        bench_minutes.parse(["--levers=base,muonn"])
    with pytest.raises(UserError, match="unknown option --minute;.*--minutes"):
        bench_minutes.parse(["--minute=3"])
    assert bench_minutes.parse(["--levers=muon,wsd", "--minutes=2"])["levers"] == "muon,wsd"
