"""GPT-2 end to end with text: a hub directory holding weights and GPT-2's real tokenizer files
(vocab.json + merges.txt, the hub's names) samples from the command line exactly what
`transformers` generates greedily; it fine-tunes on text with LoRA from the command line, and the
result samples and serves text. The weights are a random stand-in of GPT-2's vocabulary
(the real ones cannot be downloaded here); the tokenizer files are the real ones."""
import shutil

import pytest
import torch
from test_pretrained import perturbed_hub_model
from test_tokenizer import GPT2_DIR, needs_gpt2

transformers = pytest.importorskip("transformers")
pytestmark = needs_gpt2

SHAPE = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=50257)  # GPT-2's vocabulary, a tiny body


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    model = perturbed_hub_model(shape=SHAPE, eos=50256)
    folder = tmp_path_factory.mktemp("gpt2-like")
    model.save_pretrained(folder)
    shutil.copy(GPT2_DIR / "encoder.json", folder / "vocab.json")  # the hub's names for GPT-2's two files
    shutil.copy(GPT2_DIR / "vocab.bpe", folder / "merges.txt")
    return model, folder


def greedy_text_of_transformers(model, folder, prompt: str, new: int) -> str:
    reference = transformers.GPT2TokenizerFast.from_pretrained(str(folder))  # reads vocab.json + merges.txt
    ids = reference(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=None,
                         attention_mask=torch.ones_like(ids))
    return reference.decode(out[0])


def test_model_handler_prints_what_transformers_generates_greedily(hub_dir, capsys):
    import model_handler
    model, folder = hub_dir
    samples = model_handler.main([str(folder), "--prompt=Hello world", "--temperature=0", "--max_new_tokens=20",
                                  "--device=cpu"])
    expected = greedy_text_of_transformers(model, folder, "Hello world", 20)
    assert len(expected) > len("Hello world") + 20  # twenty words or pieces of words came
    assert samples == [expected]
    assert capsys.readouterr().out.strip() == expected.strip()


def test_lora_fine_tuning_from_the_hub_directory_on_text_then_sampling_and_export(hub_dir, tmp_path, capsys):
    import gpt_final_version
    import model_handler
    _, folder = hub_dir
    text = tmp_path / "me.txt"
    text.write_text("Hello world, this is how I write: short lines, lots of commas, and emoji 🙂.\n" * 40)
    out = tmp_path / "me-lora.pt"
    result = gpt_final_version.main([f"--init_from={folder}", f"--data={text}", "--lora_rank=4", "--max_iters=12",
                                     "--learning_rate=1e-2", "--warmup_iters=0", "--eval_interval=6", "--eval_iters=2", "--batch_size=4", "--block_size=32",
                                     f"--out={out}", "--device=cpu", "--compile=false", "--progress=false",
                                     "--notes=", "--samples_dir=", "--sample_chars=0"])
    first_val, last_val = result.history[0][2], result.history[-1][2]
    assert out.is_file() and last_val < first_val  # the adapters learn the text
    samples = model_handler.main([str(out), "--prompt=Hello world", "--max_new_tokens=10", "--device=cpu"])
    assert samples[0].startswith("Hello world") and len(samples[0]) > len("Hello world")
    merged = tmp_path / "merged.pt"
    model_handler.main([str(out), f"--export={merged}", "--export_half=false", "--device=cpu"])
    again = model_handler.main([str(merged), "--prompt=Hello world", "--max_new_tokens=10", "--device=cpu"])
    assert again == samples  # the merged export samples what base + adapters sample
