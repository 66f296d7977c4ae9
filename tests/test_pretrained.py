"""GPT-2's weights in our GPT, proven against `transformers` (a test dependency only): a small
random GPT2LMHeadModel with every parameter perturbed (so a dropped bias or LayerNorm would show),
saved with save_pretrained, loads through pretrained.py with the same logits and the same greedy
tokens. Broken directories are refused by name. No network: the hub is never asked."""
import json
import shutil

import pytest
import torch

from config import GPTConfig
from gpt_final_version import GPT
from gptlib import pretrained
from gptlib.checkpoint import load_weights
from gptlib.cli import apply
from gptlib.errors import UserError

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

SHAPE = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=100)


def perturbed_hub_model(seed: int = 0, shape: dict = SHAPE, eos: int = 0):
    """A random GPT-2 whose LayerNorm gains are not 1 and whose biases are not 0: a loader that
    dropped any tensor would give other logits."""
    torch.manual_seed(seed)
    hub_config = transformers.GPT2Config(**shape, bos_token_id=eos, eos_token_id=eos)
    model = transformers.GPT2LMHeadModel(hub_config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module")
def hub_dirs(tmp_path_factory):
    """The same perturbed model saved both ways: model.safetensors and pytorch_model.bin."""
    model = perturbed_hub_model()
    folder = tmp_path_factory.mktemp("hub")
    model.save_pretrained(folder / "safetensors")
    # The older layout, pytorch_model.bin: a pickled state_dict (transformers 5 writes safetensors
    # only, so it is written as its earlier save_pretrained did), here with the tied lm_head.weight kept.
    (folder / "bin").mkdir()
    shutil.copy(folder / "safetensors" / "config.json", folder / "bin")
    torch.save(model.state_dict(), folder / "bin" / "pytorch_model.bin")
    return model, folder


def our_model(directory, block_size: int = 0) -> GPT:
    state = pretrained.load_pretrained(str(directory), block_size=block_size)
    model = GPT(apply(GPTConfig(), state["model_config"]))
    load_weights(model, state["model"], str(directory))
    return model.eval()


@pytest.mark.parametrize("layout", ["safetensors", "bin"])
def test_logits_equal_those_of_transformers(hub_dirs, layout):
    hub_model, folder = hub_dirs
    ours = our_model(folder / layout)
    idx = torch.randint(0, SHAPE["vocab_size"], (3, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hub_model(idx).logits
        logits, _ = ours(idx)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_greedy_generation_gives_the_same_tokens(hub_dirs):
    hub_model, folder = hub_dirs
    ours = our_model(folder / "safetensors")
    prompt = torch.tensor([[5, 17, 42, 3]])
    expected = hub_model.generate(prompt, max_new_tokens=40, do_sample=False, pad_token_id=0,
                                  eos_token_id=None, attention_mask=torch.ones_like(prompt))
    for use_cache in (True, False):
        ids = ours.generate(prompt, 40, temperature=0, use_cache=use_cache)
        assert ids.tolist() == expected.tolist()


def test_the_config_is_gpt2s_shape_with_its_four_switches(hub_dirs):
    _, folder = hub_dirs
    config = pretrained.read_config(folder / "safetensors")
    assert (config.n_layer, config.n_head, config.n_embd, config.block_size, config.vocab_size) == (2, 2, 32, 64, 100)
    assert (config.qkv_bias, config.lm_head_bias, config.tie_embeddings, config.activation) == (True, False, True, "gelu_tanh")
    model = our_model(folder / "safetensors")
    assert model.lm_head.weight is model.token_embedding.weight
    hub_count = sum(p.numel() for p in perturbed_hub_model().parameters())
    assert model.num_params() == hub_count  # the same parameters, none extra, none missing


def test_block_size_may_shrink_the_context(hub_dirs):
    hub_model, folder = hub_dirs
    ours = our_model(folder / "safetensors", block_size=16)
    assert ours.config.block_size == 16 and ours.position_embedding.weight.shape == (16, 32)
    idx = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hub_model(idx).logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(UserError, match="at most 64"):
        pretrained.read_config(folder / "safetensors", block_size=128)


def broken_copy(folder, tmp_path, change):
    """A copy of the saved model with one tensor changed by `change(tensors)`."""
    from safetensors.torch import load_file, save_file
    target = tmp_path / "broken"
    shutil.copytree(folder / "safetensors", target)
    tensors = load_file(str(target / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(target / "model.safetensors"))
    return target


@pytest.mark.parametrize("change, named", [
    (lambda t: t.pop("transformer.h.1.ln_2.bias"), "h.1.ln_2.bias is missing"),
    (lambda t: t.update({"transformer.h.0.attn.extra": torch.zeros(3)}), "h.0.attn.extra is unexpected"),
    (lambda t: t.update({"transformer.h.0.mlp.c_fc.weight": torch.zeros(128, 32)}),
     r"h.0.mlp.c_fc.weight is \(128, 32\), expected \(32, 128\)"),
])
def test_a_missing_unexpected_or_misshaped_tensor_is_refused_by_name(hub_dirs, tmp_path, change, named):
    _, folder = hub_dirs
    with pytest.raises(UserError, match=named):
        pretrained.load_pretrained(str(broken_copy(folder, tmp_path, change)))


def test_the_causal_mask_buffers_of_older_files_are_ignored(hub_dirs, tmp_path):
    _, folder = hub_dirs
    directory = broken_copy(folder, tmp_path, lambda t: t.update({"transformer.h.0.attn.bias": torch.ones(1, 1, 64, 64),
                                                                  "transformer.h.0.attn.masked_bias": torch.tensor(-1e4)}))
    assert "blocks.0.attn.qkv.bias" in pretrained.load_pretrained(str(directory))["model"]


def test_bad_sources_get_one_clear_line(hub_dirs, tmp_path):
    _, folder = hub_dirs
    with pytest.raises(UserError, match="neither a directory nor a known model name"):
        pretrained.load_pretrained("gpt3")
    with pytest.raises(UserError, match="neither a directory"):
        pretrained.load_pretrained(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no config.json"):
        pretrained.load_pretrained(str(tmp_path / "empty"))
    corrupt = tmp_path / "corrupt"
    shutil.copytree(folder / "safetensors", corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not really tensors")
    with pytest.raises(UserError, match="damaged or not a safetensors file"):
        pretrained.load_pretrained(str(corrupt))
    (corrupt / "model.safetensors").unlink()
    with pytest.raises(UserError, match="has no weights"):
        pretrained.load_pretrained(str(corrupt))


def test_unsupported_variants_are_refused(hub_dirs, tmp_path):
    _, folder = hub_dirs
    variant = tmp_path / "variant"
    shutil.copytree(folder / "safetensors", variant)
    config = json.loads((variant / "config.json").read_text())
    (variant / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(UserError, match="activation_function 'relu'"):
        pretrained.read_config(variant)


# ----------------------------------------------------------------------------------------------
# Training from GPT-2's weights: on token ids through the training loop (the text's tokenizer is
# tokenizer.py's job), in full and with LoRA adapters


def id_dataset(vocab_size: int, length: int = 4000, seed: int = 3):
    """Random token ids under a stand-in vocabulary of one character per id, so the loop's code for
    text (vocabulary size, samples) runs unchanged."""
    from gptlib.corpus import CharVocab, TextDataset
    ids = torch.randint(0, vocab_size, (length,), generator=torch.Generator().manual_seed(seed))
    return TextDataset(ids, CharVocab([chr(0x100 + i) for i in range(vocab_size)]))


def train_from_hub(directory, out, lora_rank=0, max_iters=4):
    from gptlib import build, train
    from gptlib.cli import ParsedArgs
    from gptlib.processes import Processes
    from gptlib.start import read_start, settle
    overrides = dict(block_size=32, init_from=str(directory), lora_rank=lora_rank, lora_alpha=8.0, max_iters=max_iters,
                     batch_size=4, eval_interval=max_iters, eval_iters=2, sample_chars=0, notes="", out=str(out),
                     device="cpu", progress=False, warmup_iters=0, learning_rate=1e-2)
    start = read_start(overrides)  # the same chain as the command line, with data of our own
    settings = settle(ParsedArgs(overrides, [], "none", False), start, "gpt", Processes(), "cpu")
    model, _ = build.build_for_run(GPT, settings.model_cfg, settings.cfg, start)
    result = train.run(train.Job(settings, model, id_dataset(settings.model_cfg.vocab_size)))
    return model, result, start.state


def test_full_fine_tuning_from_a_hub_directory_trains_every_weight(hub_dirs, tmp_path):
    _, folder = hub_dirs
    model, result, init_state = train_from_hub(folder / "safetensors", tmp_path / "full.pt")
    assert result.iters == 4 and result.val_loss == result.val_loss  # finite
    saved = torch.load(tmp_path / "full.pt", weights_only=True)
    assert saved["model_config"]["tie_embeddings"] and saved["model_config"]["block_size"] == 32
    changed = [n for n, t in saved["model"].items() if not torch.equal(t, init_state["model"][n])]
    assert "blocks.0.attn.qkv.bias" in changed and "ln_f.weight" in changed


def test_lora_from_a_hub_directory_saves_adapters_that_load_onto_it(hub_dirs, tmp_path):
    _, folder = hub_dirs
    model, _, init_state = train_from_hub(folder / "safetensors", tmp_path / "lora.pt", lora_rank=2)
    saved = torch.load(tmp_path / "lora.pt", weights_only=True)
    assert saved["lora"]["base"] == str((folder / "safetensors").resolve())
    assert all(name.endswith(("lora_A", "lora_B")) for name in saved["model"])
    from model_handler import ModelHandler
    merged = ModelHandler(str(tmp_path / "lora.pt"), "cpu").load().model
    idx = torch.randint(0, 100, (2, 32), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(merged(idx)[0], model.eval()(idx)[0], atol=1e-5, rtol=1e-5)
    adapted = (".attn.qkv.weight", ".attn.proj.weight", ".ffwd.up.weight", ".ffwd.proj.weight")  # --lora_targets=attn,mlp
    frozen = {n: t for n, t in merged.state_dict().items() if not n.endswith(adapted)}
    assert all(torch.equal(t, init_state["model"][n]) for n, t in frozen.items())


def test_the_training_command_says_what_is_missing_for_text_and_writes_nothing(hub_dirs, tmp_path):
    import gpt_final_version
    _, folder = hub_dirs
    out = tmp_path / "never.pt"
    with pytest.raises(UserError, match="has no tokenizer files"):
        gpt_final_version.main([f"--init_from={folder / 'safetensors'}", f"--out={out}", "--block_size=32", "--device=cpu"])
    with pytest.raises(UserError, match="does not exist"):
        gpt_final_version.main([f"--init_from={tmp_path / 'missing'}", f"--out={out}"])
    with pytest.raises(UserError, match="at most 64"):
        gpt_final_version.main([f"--init_from={folder / 'safetensors'}", f"--out={out}", "--block_size=100"])
    assert not out.exists()


def test_model_handler_samples_token_ids_from_a_hub_directory(hub_dirs, capsys):
    import model_handler
    hub_model, folder = hub_dirs
    rows = model_handler.main([str(folder / "safetensors"), "--prompt_ids=5,17,42", "--max_new_tokens=8",
                               "--temperature=0", "--device=cpu"])
    expected = hub_model.generate(torch.tensor([[5, 17, 42]]), max_new_tokens=8, do_sample=False, pad_token_id=0,
                                  eos_token_id=None, attention_mask=torch.ones(1, 3, dtype=torch.long))
    assert rows == expected.tolist()
    assert capsys.readouterr().out.strip() == ",".join(map(str, expected[0].tolist()))
    with pytest.raises(UserError, match="tokenizer"):
        model_handler.main([str(folder / "safetensors"), "--prompt=hello", "--device=cpu"])


def test_the_streaming_engine_gives_generates_tokens_for_gpt2(hub_dirs):
    from gptlib.engine import Batcher, TokenStream, decoder_for
    _, folder = hub_dirs
    ours = our_model(folder / "safetensors")
    with torch.no_grad():
        for block in ours.blocks:
            block.attn.qkv.bias.normal_(0, 1.0)  # large enough that dropping them changes the samples
    prompt = [5, 17, 42, 3]
    expected = ours.generate(torch.tensor([prompt]), 30, temperature=1.0,
                             generator=torch.Generator().manual_seed(7))[0, len(prompt):].tolist()
    stream = TokenStream(decoder_for(ours), prompt, 30, temperature=1.0, generator=torch.Generator().manual_seed(7))
    assert list(stream) == expected
    batcher = Batcher(ours, rows=2)  # the server's continuous batching: the same step, B rows
    try:
        assert list(batcher.submit(prompt, 30, temperature=1.0, generator=torch.Generator().manual_seed(7))) == expected
    finally:
        batcher.close()
