"""--export_peft: a LoRA run as PEFT's adapter over its base in the Hugging Face layout (issue 27,
point 2): peft.PeftModel over transformers' model gives our unmerged LoRA model's logits and greedy
tokens, for the Llama family (our fused qkv split into q/k/v) and for GPT-2 (Conv1D, fan_in_fan_out),
the chat markers' trained rows included, and through the command on a real LoRA fine-tune."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("safetensors")

from test_bpe_chat import PAIRS  # noqa: E402
from test_gpt2_text import hub_dir  # noqa: E402, F401  (the fixture: a random GPT-2-vocabulary hub directory)
from test_hub_llama import SHAPE, ours, reference_model  # noqa: E402
from test_tokenizer import needs_gpt2  # noqa: E402

import gpt_final_version  # noqa: E402
import model_handler  # noqa: E402
from config import GPTConfig  # noqa: E402
from gpt_final_version import GPT  # noqa: E402
from gptlib import lora  # noqa: E402
from gptlib.errors import UserError  # noqa: E402
from gptlib.export_peft import unmerged_lora_model, write_peft  # noqa: E402


def peft_model(directory):
    base = transformers.AutoModelForCausalLM.from_pretrained(str(directory / "base")).eval()
    return peft.PeftModel.from_pretrained(base, str(directory / "adapter")).eval()


def assert_same_function(theirs, model, vocab_size, prompt_length=5, new=16):
    idx = torch.randint(0, vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    idx[1, -3:] = torch.arange(vocab_size - 3, vocab_size)  # the last ids: the trained rows, where there are any
    with torch.no_grad():
        ours_logits = model(idx)[0]
        assert (theirs(input_ids=idx).logits - ours_logits).abs().max() < 1e-5
        with theirs.disable_adapter():  # the adapter matters: without it the logits are another model's
            assert (theirs(input_ids=idx).logits - ours_logits).abs().max() > 1e-2
        prompt = idx[:1, :prompt_length]
        greedy = theirs.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                                 do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(greedy, model.generate(prompt, new, temperature=0))


@pytest.mark.parametrize("family", ["llama", "qwen3"])  # tied and untied output; Qwen3: q/k norms, head_dim apart
def test_a_llama_family_adapter_with_split_qkv_and_trained_rows_gives_our_logits(family, tmp_path):
    reference_model(family, tmp_path / "hub")
    model = ours(tmp_path / "hub")
    vocab = SHAPE["vocab_size"]
    lora.add_adapters(model, rank=4, alpha=8.0, rows_from=vocab - 3)  # as if three markers had been appended
    with torch.no_grad():  # a trained adapter: B far from zero, the markers' rows moved
        for name, param in model.named_parameters():
            if name.endswith(("lora_B", "lora_rows")):
                param.add_(torch.randn_like(param) * 0.2)
    written = write_peft(model, None, 4, 8.0, str(tmp_path / "out"))
    assert written["adapter"] == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert (config["r"], config["lora_alpha"], config["task_type"], config["bias"]) == (4, 8.0, "CAUSAL_LM", "none")
    rows = list(range(vocab - 3, vocab))
    tied = family == "llama"
    assert config["trainable_token_indices"] == ({"embed_tokens": rows} if tied else {"embed_tokens": rows, "lm_head": rows})
    assert_same_function(peft_model(tmp_path / "out"), model.eval(), vocab)


def test_a_gpt2_shaped_adapter_is_on_conv1d_with_fan_in_fan_out(tmp_path):
    """GPT-2's fused c_attn as it is, its Conv1D weights stored (in, out); two c_proj layers, one adapted."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, n_layer=2, n_head=2, n_embd=16, block_size=32, position="learned",
                          activation="gelu_tanh", bias=True, qkv_bias=True, lm_head_bias=False, tie_embeddings=True,
                          dropout=0.0)).eval()
    lora.add_adapters(model, rank=2, alpha=6.0, rows_from=37, targets=("attn.qkv", "attn.proj", "ffwd.up"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("lora_B", "lora_rows")):
                param.add_(torch.randn_like(param) * 0.3)
    write_peft(model, None, 2, 6.0, str(tmp_path / "out"))
    config = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True and config["target_modules"] == ["attn.c_proj", "c_attn", "c_fc"]
    assert config["trainable_token_indices"] == {"wte": [37, 38, 39]}  # tied: the output layer follows
    assert_same_function(peft_model(tmp_path / "out"), model, 40, new=12)


@pytest.mark.slow  # a real LoRA run on GPT-2's 50,257-token vocabulary, then the command, then PEFT twice
@needs_gpt2
def test_the_command_writes_a_gpt2_chat_lora_run_that_peft_runs_as_we_do(hub_dir, tmp_path):  # noqa: F811
    """A real LoRA fine-tune on chat pairs from a GPT-2-shaped hub directory (GPT-2's tokenizer and
    the three chat markers appended, whose rows train): PEFT over GPT2LMHeadModel gives its logits."""
    _, folder = hub_dir
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"input": a, "output": b}) + "\n" for a, b in PAIRS[:12]), encoding="utf-8")
    run = tmp_path / "me-lora.pt"
    gpt_final_version.main([f"--init_from={folder}", f"--data={pairs}", "--lora_rank=4", "--lora_alpha=8",
                            f"--out={run}", "--max_iters=2", "--warmup_iters=0", "--eval_interval=2",
                            "--eval_iters=1", "--batch_size=2", "--block_size=32", "--device=cpu", "--progress=false",
                            "--notes=", "--samples_dir=", "--sample_chars=0", "--learning_rate=2e-2",
                            "--report_contexts=0"])
    written = model_handler.main([str(run), f"--export_peft={tmp_path / 'out'}", "--device=cpu"])
    assert "model.safetensors" in written["base"]
    config = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True and config["target_modules"] == ["c_attn", "c_fc", "c_proj"]
    assert config["trainable_token_indices"] == {"wte": [50257, 50258, 50259]}
    assert config["base_model_name_or_path"] == str((tmp_path / "out" / "base").resolve())
    model, _ = unmerged_lora_model(str(run))
    assert_same_function(peft_model(tmp_path / "out"), model, 50260)
    found = peft.AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "out" / "adapter")).eval()  # its base by name
    idx = torch.tensor([[464, 3290, 50257, 50259, 318]])
    with torch.no_grad():
        assert (found(input_ids=idx).logits - model(idx)[0]).abs().max() < 1e-5

    merged = tmp_path / "merged.pt"  # a plain checkpoint, adapters merged: nothing for PEFT
    model_handler.main([str(run), f"--export={merged}", "--device=cpu"])
    with pytest.raises(UserError, match="trained every weight, so it has no LoRA adapters.*--export_hf"):
        model_handler.main([str(merged), f"--export_peft={tmp_path / 'x'}", "--device=cpu"])
    with pytest.raises(UserError, match="published weights, not LoRA adapters"):
        model_handler.main([str(folder), f"--export_peft={tmp_path / 'x'}", "--device=cpu"])
    with pytest.raises(UserError, match="already holds files"):
        model_handler.main([str(run), f"--export_peft={tmp_path / 'out'}", "--device=cpu"])
    assert not (tmp_path / "x").exists()


def test_a_model_without_a_transformers_architecture_is_refused_by_option(tmp_path):
    model = GPT(GPTConfig(vocab_size=20, n_layer=1, n_head=2, n_embd=16, block_size=8, position="rope",
                          activation="relu2", dropout=0.0))
    lora.add_adapters(model, rank=2, alpha=4.0)
    with pytest.raises(UserError, match=r"no transformers architecture.*--activation=relu2 \(needs swiglu\)"):
        write_peft(model, None, 2, 4.0, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
