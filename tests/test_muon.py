"""The levers of quality per minute (issue 16): the Muon optimizer, the warm-up/stable/decay schedule
and QK-norm. Each is checked against what it claims (orthogonal updates, torch's AdamW arithmetic,
the schedule's shape, QK-norm on both attention paths and in the decoding engine) and end to end."""
import pytest
import torch
from conftest import tiny_run_args

import gpt_final_version
from config import GPTConfig, TrainConfig
from gpt_final_version import GPT
from gptlib import muon, optimizers
from gptlib.checkpoint import load_checkpoint
from gptlib.engine import TokenStream, decoder_for
from gptlib.errors import UserError

# ----------------------------------------------------------------------------------------------
# Muon


@pytest.mark.parametrize("shape", [(48, 48), (32, 96), (96, 32)])
def test_orthogonalize_keeps_the_singular_vectors_and_brings_the_values_near_one(shape):
    matrix = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 5.0
    matrix[:, 0] *= 30.0  # one direction far larger than the rest, as gradients have
    result = muon.orthogonalize(matrix)
    assert result.shape == matrix.shape
    values = torch.linalg.svdvals(result)
    assert values.max() < 1.3 and (values > 0.6).float().mean() > 0.9, values  # five steps lift all but the tiniest
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    in_matrix_basis = u.T @ result @ vh.T  # diagonal when the singular vectors are shared
    off_diagonal = in_matrix_basis - torch.diag(torch.diagonal(in_matrix_basis))
    assert off_diagonal.abs().max() < 1e-3


def test_orthogonalize_does_not_care_about_the_gradient_scale():
    matrix = torch.randn(16, 40, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(muon.orthogonalize(matrix), muon.orthogonalize(matrix * 1e-4), rtol=1e-3, atol=2e-4)


def test_orthogonalize_in_bfloat16_lands_near_the_float32_answer():
    matrix = torch.randn(32, 96, generator=torch.Generator().manual_seed(2))
    exact, rounded = muon.orthogonalize(matrix), muon.orthogonalize(matrix, dtype=torch.bfloat16)
    assert rounded.dtype == torch.float32
    assert (rounded - exact).norm() / exact.norm() < 0.05


def test_the_iteration_runs_in_bfloat16_only_where_the_hardware_has_it():
    assert muon.newton_schulz_dtype("meta") == torch.float32
    has_it = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert muon.newton_schulz_dtype("cpu") == (torch.bfloat16 if has_it else torch.float32)


def _model(seed=0, **shape):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0, **shape))


def _step(model, optimizer, seed):
    idx = torch.randint(13, (4, 8), generator=torch.Generator().manual_seed(seed))
    _, loss = model(idx, idx)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def test_the_groups_that_are_not_muon_step_exactly_as_torch_adamw():
    ours, reference = _model(), _model()

    def groups(model):
        return [{"params": list(model.parameters())[:7], "weight_decay": 0.1},
                {"params": list(model.parameters())[7:], "weight_decay": 0.0}]

    ours_opt = muon.Muon(groups(ours), lr=3e-3, betas=(0.9, 0.95))
    reference_opt = torch.optim.AdamW(groups(reference), lr=3e-3, betas=(0.9, 0.95))
    for seed in range(5):
        _step(ours, ours_opt, seed)
        _step(reference, reference_opt, seed)
    for a, b in zip(ours.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = _model()
    optimizer = optimizers.configure_optimizer(model, TrainConfig(optimizer="muon", learning_rate=2e-3, muon_lr=0.03), "cpu")
    names = {id(p): n for n, p in model.named_parameters()}
    by_group = [{names[id(p)] for p in group["params"]} for group in optimizer.param_groups]
    decayed, not_decayed, matrices = by_group
    assert decayed == {"token_embedding.weight", "position_embedding.weight", "lm_head.weight"}
    assert matrices == {n for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() == 2}
    assert all(name.endswith(("bias", "ln1.weight", "ln2.weight", "ln_f.weight")) for name in not_decayed)
    assert optimizer.param_groups[2]["muon"] and optimizer.param_groups[2]["lr_scale"] == pytest.approx(15.0)


@pytest.mark.parametrize("decay", [0.0, 0.5])
def test_a_muon_step_moves_a_matrix_by_its_orthogonalized_gradient(decay):
    model = _model()
    cfg = TrainConfig(optimizer="muon", muon_lr=0.05, learning_rate=1e-3, muon_weight_decay=decay)
    optimizer = optimizers.configure_optimizer(model, cfg, "cpu")
    optimizer.param_groups[2]["lr"] = 0.05
    weight = model.blocks[0].ffwd.up.weight  # (64, 16): tall, so scaled by sqrt(64 / 16) = 2
    before = weight.detach().clone()
    idx = torch.randint(13, (4, 8), generator=torch.Generator().manual_seed(0))
    model(idx, idx)[1].backward()
    expected = before * (1 - 0.05 * decay) - 0.05 * 2.0 * muon.orthogonalize(weight.grad * 1.95, dtype=optimizer.newton_schulz_dtype)  # Nesterov: g + 0.95 g
    optimizer.step()
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-5, atol=1e-6)


def test_training_with_muon_lowers_the_loss_and_resumes_exactly(small_corpus, tmp_path):
    common = dict(optimizer="muon", lr_decay_iters=40, eval_interval=20, sample_chars=0)
    result = gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "half.pt", max_iters=20, **common))
    assert result.val_loss < 3.4  # from ln(59) = 4.08 at initialisation
    resumed = tmp_path / "resumed.pt"
    gpt_final_version.main(["--resume=" + str(tmp_path / "half.pt"), "--max_iters=40", f"--out={resumed}",
                            f"--notes={tmp_path / 'notes.txt'}", "--progress=false"])
    gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "full.pt", max_iters=40, **common))
    a, b = load_checkpoint(str(resumed)), load_checkpoint(str(tmp_path / "full.pt"))
    assert a["train_config"]["optimizer"] == "muon" and a["iter_num"] == 40
    for name, value in b["model"].items():
        assert torch.equal(a["model"][name], value), name


def test_resuming_with_another_optimizer_says_so_and_continues(small_corpus, tmp_path, capsys):
    gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "a.pt", max_iters=4, sample_chars=0))
    gpt_final_version.main([f"--resume={tmp_path / 'a.pt'}", "--optimizer=muon", "--max_iters=6",
                            f"--out={tmp_path / 'b.pt'}", "--notes=", "--progress=false", "--sample_chars=0"])
    assert "trained with --optimizer=adamw" in capsys.readouterr().out
    assert load_checkpoint(str(tmp_path / "b.pt"))["iter_num"] == 6


def test_muon_leaves_lora_adapters_to_adamw():
    assert not muon.is_hidden_matrix("blocks.0.attn.qkv.lora_A", torch.zeros(4, 16))
    assert muon.is_hidden_matrix("blocks.0.attn.qkv.weight", torch.zeros(48, 16))


def test_bad_optimizer_and_schedule_settings_are_refused():
    with pytest.raises(UserError, match="optimizer"):
        TrainConfig(optimizer="sgd").validate()
    with pytest.raises(UserError, match="decay_fraction"):
        TrainConfig(schedule="wsd", decay_fraction=0.0).validate()
    with pytest.raises(UserError, match="muon_weight_decay"):
        TrainConfig(muon_weight_decay=-0.1).validate()


# ----------------------------------------------------------------------------------------------
# Warm-up, stable, decay


def test_the_wsd_schedule_holds_the_peak_then_falls_in_a_line_to_min_lr():
    cfg = TrainConfig(schedule="wsd", decay_fraction=0.25, learning_rate=1e-3, min_lr=1e-4, warmup_iters=10,
                      max_iters=110)
    rates = [optimizers.learning_rate_at(i, cfg) for i in range(115)]
    assert rates[0] < rates[9] < 1e-3
    assert rates[10] == rates[50] == rates[85] == pytest.approx(1e-3)  # stable until 75% of the steps after warm-up
    assert rates[95] == pytest.approx(1e-4 + 0.6 * 9e-4)  # 40% of the way down the decay
    assert all(a >= b for a, b in zip(rates[85:], rates[86:]))
    assert rates[110] == rates[114] == pytest.approx(1e-4)
    timed = TrainConfig(schedule="wsd", decay_fraction=0.2, learning_rate=1e-3, min_lr=0.0, warmup_iters=0, max_minutes=1)
    assert optimizers.learning_rate_at(99, timed, time_fraction=0.7) == pytest.approx(1e-3)
    assert optimizers.learning_rate_at(99, timed, time_fraction=0.9) == pytest.approx(5e-4)


# ----------------------------------------------------------------------------------------------
# QK-norm


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_qk_norm_gives_the_same_function_on_both_attention_paths(position):
    from test_model import copy_heads_into_fused

    heads, fast = _model(attention="heads", position=position, qk_norm=True), _model(1, position=position, qk_norm=True)
    copy_heads_into_fused(heads, fast)
    idx = torch.randint(13, (3, 8), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(fast(idx)[0], heads(idx)[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fast(idx)[0], _model(1, position=position)(idx)[0], atol=1e-3)  # it does change the model


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_the_engine_decodes_a_qk_norm_model_as_generate_does(position):
    model = _model(position=position, qk_norm=True).eval()
    prompt = [1, 2, 3]
    for seed in (0, 1):
        stream = TokenStream(decoder_for(model), prompt, 20, temperature=1.0, generator=torch.Generator().manual_seed(seed))
        expected = model.generate(torch.tensor([prompt]), 20, temperature=1.0, generator=torch.Generator().manual_seed(seed))
        assert list(stream) == expected[0, 3:].tolist()


def test_a_qk_norm_model_trains_saves_and_reloads(small_corpus, tmp_path):
    from model_handler import ModelHandler

    out = tmp_path / "qk.pt"
    result = gpt_final_version.main(tiny_run_args(small_corpus, out, max_iters=20, qk_norm="true", sample_chars=0))
    assert result.val_loss < 3.6  # from ln(59) = 4.08
    handler = ModelHandler(str(out), "cpu").load()
    assert handler.model.config.qk_norm
