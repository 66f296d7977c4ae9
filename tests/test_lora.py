"""LoRA (lora.py, --lora_rank): step 0 is the base model, only the adapters train and are saved,
merging gives the same function, a LoRA run resumes exactly and runs under torchrun."""
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, tiny_run_args

import gpt_final_version
import model_handler
from config import GPTConfig
from gpt_final_version import GPT
from gptlib import lora
from gptlib.checkpoint import load_checkpoint, save_checkpoint
from gptlib.errors import UserError
from model_handler import ModelHandler

SHAPE = GPTConfig(vocab_size=20, block_size=16, n_embd=32, n_head=2, n_layer=2, dropout=0.0)


def tiny_gpt(seed=0) -> GPT:
    torch.manual_seed(seed)
    return GPT(SHAPE).eval()


def test_step_0_is_exactly_the_base_model():
    model = tiny_gpt()
    idx = torch.randint(0, 20, (2, 16))
    before, _ = model(idx)
    wrapped = lora.add_adapters(model, rank=4, alpha=16)
    assert wrapped == [f"blocks.{i}.{part}" for i in range(2) for part in ("attn.qkv", "attn.proj", "ffwd.up", "ffwd.proj")]
    after, _ = model(idx)
    assert torch.equal(before, after)  # B starts at zero: not close, equal


def test_merged_equals_unmerged_and_leaves_a_plain_model():
    model = tiny_gpt()
    lora.add_adapters(model, rank=4, alpha=8)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.normal_(0, 0.5)  # a trained adapter: the update is far from zero
    idx = torch.randint(0, 20, (2, 16))
    unmerged, _ = model(idx)
    assert not torch.allclose(unmerged, tiny_gpt()(idx)[0], atol=1e-3)
    lora.merge_adapters(model)
    merged, _ = model(idx)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    assert set(model.state_dict()) == set(tiny_gpt().state_dict())  # loads as an ordinary GPT


def test_freezing_leaves_only_the_adapters_trainable():
    model = tiny_gpt()
    lora.add_adapters(model, rank=2, alpha=16, targets=lora.target_layers("attn"))
    lora.freeze_all_but_adapters(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"blocks.{i}.attn.{part}.lora_{ab}" for i in range(2) for part in ("qkv", "proj") for ab in "AB"}


def test_lora_targets_name_groups_or_single_layers():
    assert lora.target_layers("attn,mlp") == ("attn.qkv", "attn.proj", "ffwd.up", "ffwd.gate", "ffwd.proj")
    assert lora.target_layers(" ffwd.up , attn ,ffwd.up") == ("ffwd.up", "attn.qkv", "attn.proj")
    with pytest.raises(UserError, match="'q_proj' is not a layer LoRA can adapt.*attn, mlp"):
        lora.target_layers("attn,q_proj")


# ----------------------------------------------------------------------------------------------
# Through the training command: a base run, then LoRA runs from it


@pytest.fixture(scope="module")
def base(tmp_path_factory, shakespeare_path):
    folder = tmp_path_factory.mktemp("lora")
    data = folder / "text.txt"
    data.write_text(shakespeare_path.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    gpt_final_version.main(tiny_run_args(data, folder / "base.pt", max_iters=10, n_layer=1, sample_chars=0))
    return folder, data


def lora_run(base, out_name, *extra, max_iters=10):
    folder, data = base
    out = folder / out_name
    return gpt_final_version.main(tiny_run_args(data, out, max_iters=max_iters, sample_chars=0, eval_interval=5,
                                                init_from=folder / "base.pt", lora_rank=4, lora_alpha=8) + list(extra)), out


def test_only_the_adapters_train_and_only_they_are_saved(base, capsys):
    folder, _ = base
    _, out = lora_run(base, "adapted.pt")
    assert "trainable parameters" in capsys.readouterr().out
    saved = load_checkpoint(str(out))
    assert saved["model"] and all(lora.is_adapter(name) for name in saved["model"])
    assert saved["lora"]["base"] == str((folder / "base.pt").resolve())
    base_weights = load_checkpoint(str(folder / "base.pt"))["model"]
    merged = ModelHandler(str(out), "cpu").load().model.state_dict()
    changed = {name for name in base_weights if not torch.equal(merged[name], base_weights[name])}
    assert changed == {f"blocks.0.{layer}.weight" for layer in ("attn.qkv", "attn.proj", "ffwd.up", "ffwd.proj")}
    # W + (alpha/r) B A on the attention's and the MLP's layers (--lora_targets=attn,mlp); all else frozen


def test_lora_targets_choose_the_adapted_layers_and_a_resume_keeps_them(base):
    _, out = lora_run(base, "mlp_only.pt", "--lora_targets=mlp", max_iters=4)
    saved = load_checkpoint(str(out))
    assert saved["lora"]["targets"] == ["ffwd.up", "ffwd.gate", "ffwd.proj"]
    assert {name.rsplit(".", 1)[0] for name in saved["model"]} == {"blocks.0.ffwd.up", "blocks.0.ffwd.proj"}
    with pytest.raises(UserError, match="adapters on ffwd.up, ffwd.gate, ffwd.proj; a resumed run keeps them"):
        gpt_final_version.main([f"--resume={out}", "--lora_targets=attn", "--max_iters=6"])


def test_export_merges_and_the_merged_model_gives_the_adapted_logits(base, tmp_path):
    from config import TrainConfig
    from gptlib.build import build_for_run
    from gptlib.start import Start
    _, out = lora_run(base, "to_export.pt")
    state = load_checkpoint(str(out))
    model_cfg = GPTConfig(**state["model_config"])
    cfg = TrainConfig(**state["train_config"])
    adapted, _ = build_for_run(GPT, model_cfg, cfg, Start("resume", str(out), state))  # base + adapters, unmerged
    exported = tmp_path / "merged.pt"
    model_handler.main([str(out), f"--export={exported}", "--export_half=false", "--device=cpu"])
    plain = load_checkpoint(str(exported))
    assert "lora" not in plain and plain["train_config"]["lora_rank"] == 0
    merged = ModelHandler(str(exported), "cpu").load().model
    idx = torch.randint(0, model_cfg.vocab_size, (2, model_cfg.block_size))
    with torch.no_grad():
        torch.testing.assert_close(merged(idx)[0], adapted.eval()(idx)[0], atol=1e-5, rtol=1e-5)


def test_a_lora_run_resumes_exactly(base):
    folder, _ = base
    _, half = lora_run(base, "half.pt", max_iters=6)
    resumed = folder / "resumed.pt"
    gpt_final_version.main([f"--resume={half}", "--max_iters=12", f"--out={resumed}", "--notes=", "--sample_chars=0",
                            "--progress=false"])
    _, whole = lora_run(base, "whole.pt", max_iters=12)
    a, b = load_checkpoint(str(resumed)), load_checkpoint(str(whole))
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name


def test_a_moved_or_changed_base_is_reported(base, tmp_path):
    folder, _ = base
    _, out = lora_run(base, "moved.pt")
    state = load_checkpoint(str(out))
    state["lora"]["base"] = str(tmp_path / "gone.pt")
    save_checkpoint(state, str(tmp_path / "moved.pt"))
    with pytest.raises(UserError, match="not there any more"):
        ModelHandler(str(tmp_path / "moved.pt"), "cpu").load()
    other = load_checkpoint(str(folder / "base.pt"))
    other["model"] = {k: v + 0.01 for k, v in other["model"].items()}
    save_checkpoint(other, str(tmp_path / "other_base.pt"))
    state["lora"]["base"] = str(tmp_path / "other_base.pt")
    save_checkpoint(state, str(tmp_path / "changed.pt"))
    with pytest.raises(UserError, match="weights differ"):
        ModelHandler(str(tmp_path / "changed.pt"), "cpu").load()


def test_lora_refuses_what_it_cannot_do(base, tmp_path):
    folder, data = base
    with pytest.raises(UserError, match="--init_from"):
        gpt_final_version.main(tiny_run_args(data, tmp_path / "x.pt", lora_rank=4))
    new_chars = tmp_path / "new.txt"
    new_chars.write_text(data.read_text(encoding="utf-8") + "\u00e9\u00e8" * 10, encoding="utf-8")
    with pytest.raises(UserError, match="cannot learn new embedding rows"):
        gpt_final_version.main(tiny_run_args(new_chars, tmp_path / "y.pt", init_from=folder / "base.pt", lora_rank=4))
    _, out = lora_run(base, "refusals.pt", max_iters=2)
    with pytest.raises(UserError, match="keeps them"):
        gpt_final_version.main([f"--resume={out}", "--lora_rank=8", "--max_iters=4"])
    with pytest.raises(UserError, match="holds LoRA adapters"):
        gpt_final_version.main(tiny_run_args(data, tmp_path / "z.pt", init_from=out))
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists() and not (tmp_path / "z.pt").exists()


@pytest.mark.slow
def test_lora_under_torchrun_matches_one_process(base):
    """Frozen before DDP wraps: two processes on half the batch each train the same adapters as one."""
    folder, data = base
    common = dict(max_iters=8, eval_interval=8, sample_chars=0, init_from=folder / "base.pt", lora_rank=4, lora_alpha=8)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "gpt_final_version.py", *tiny_run_args(data, folder / "ddp" / "m.pt", batch_size=8, **common)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert ddp.returncode == 0, ddp.stdout[-2000:] + ddp.stderr[-3000:]
    one = subprocess.run([sys.executable, "gpt_final_version.py", *tiny_run_args(data, folder / "one" / "m.pt",
                                                                                 batch_size=16, **common)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = load_checkpoint(str(folder / "ddp" / "m.pt")), load_checkpoint(str(folder / "one" / "m.pt"))
    assert all(lora.is_adapter(name) for name in a["model"])
    for name in a["model"]:
        torch.testing.assert_close(a["model"][name], b["model"][name], atol=1e-4, rtol=1e-4)
