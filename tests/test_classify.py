"""--task=classify: a head on the GPT learns labels, ignores padding, resumes exactly, refuses bad
files in one line, and labels texts from model_handler.py and the server's POST /classify."""
from __future__ import annotations

import csv
import http.client
import json
import math
import random
import threading
from pathlib import Path

import pytest
import torch
from conftest import ROOT, assert_clean_error, run_command

import gpt_final_version
import model_handler
from chat.pipeline import main as chat_data_main
from config import ClassifyConfig, GPTConfig
from gpt_final_version import GPT
from gptlib.checkpoint import load_checkpoint
from gptlib.classify import Classifier, Labeller
from gptlib.classify_data import pad_rows, read_labelled, stratified_split
from gptlib.errors import UserError

SHIPPED = ROOT / "models" / "shakespeare_char.pt"
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=16", "--eval_iters=2",
        "--device=cpu", "--progress=false"]


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def separable_rows(n: int = 60, seed: int = 0) -> list[tuple[str, str]]:
    """Texts of a, b, c against texts of x, y, z: any model that reads its input tells them apart."""
    rng = random.Random(seed)
    return [("".join(rng.choice("abc" if i % 2 else "xyz") for _ in range(rng.randint(3, 10))),
             "abc" if i % 2 else "xyz") for i in range(n)]


def train(tmp_path: Path, data: Path, name: str, *options: str):
    out = tmp_path / f"{name}.pt"
    argv = ["--task=classify", f"--data={data}", f"--out={out}", f"--notes={tmp_path / 'notes.txt'}", *TINY, *options]
    return gpt_final_version.main(argv), out


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("classify")
    data = write_csv(folder / "toy_data.csv", separable_rows())
    result, out = train(folder, data, "toy", "--max_iters=40", "--eval_interval=40", "--learning_rate=3e-3")
    assert result.test_metrics["accuracy"] >= 0.9, result.test_metrics
    return out


# ----------------------------------------------------------------------------------------------
# Learning, padding, resume


def test_a_tiny_separable_task_is_learned_well_above_chance(classifier):
    saved = json.loads(classifier.with_suffix(".test.json").read_text())
    assert saved["accuracy"] >= 0.9 and saved["majority_baseline"] == 0.5
    assert saved["confusion"][0][0] + saved["confusion"][1][1] == round(saved["accuracy"] * saved["examples"])
    assert set(saved["per_class"]) == {"abc", "xyz"} and all(c["f1"] > 0.8 for c in saved["per_class"].values())
    state = load_checkpoint(str(classifier))
    assert state["model_kind"] == "classifier" and state["classifier"]["labels"] == ["abc", "xyz"]
    assert "test_accuracy=" in (classifier.parent / "notes.txt").read_text()


def test_the_loss_starts_near_ln_of_the_classes():
    torch.manual_seed(0)
    model = Classifier(GPT(GPTConfig(vocab_size=10, block_size=16, n_embd=32, n_head=2, n_layer=1, dropout=0.0)), 5)
    _, loss = model(torch.randint(0, 10, (64, 8)), torch.randint(0, 5, (64,)))
    assert abs(loss.item() - math.log(5)) < 0.05


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("position", ["learned", "rope"])
def test_padding_changes_no_row(pooling, position):
    """A padded batch gives each row the scores it gets alone (causal attention: padding comes after)."""
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=12, block_size=16, n_embd=32, n_head=2, n_layer=2, dropout=0.0, position=position))
    model = Classifier(gpt, 3, pooling).eval()
    rows = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
    together, _ = model(pad_rows(rows))
    for i, row in enumerate(rows):
        alone, _ = model(torch.tensor([row]))
        torch.testing.assert_close(together[i], alone[0], atol=1e-5, rtol=1e-5)


def test_resume_continues_exactly(tmp_path):
    data = write_csv(tmp_path / "toy_data.csv", separable_rows(40))
    common = ["--eval_interval=6", "--dropout=0.1", "--warmup_iters=2"]
    whole, whole_out = train(tmp_path, data, "whole", "--max_iters=12", *common)
    train(tmp_path, data, "half", "--max_iters=6", "--lr_decay_iters=12", *common)
    resumed, resumed_out = tmp_path / "resumed.pt", None
    result = gpt_final_version.main(["--task=classify", f"--data={data}", f"--resume={tmp_path / 'half.pt'}",
                                     f"--out={resumed}", "--max_iters=12", "--progress=false", "--notes="])
    resumed_out = resumed
    a, b = load_checkpoint(str(whole_out)), load_checkpoint(str(resumed_out))
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert (whole.train_loss, whole.val_loss) == (result.train_loss, result.val_loss)
    assert whole.test_metrics == result.test_metrics


def three_steps_from_the_shipped_model(tmp_path, name: str, *options: str):
    """A classifier of the separable toy task, three steps from the shipped model; its checkpoint."""
    data = write_csv(tmp_path / "toy_data.csv", separable_rows(30))
    out = tmp_path / name
    gpt_final_version.main(["--task=classify", f"--data={data}", f"--init_from={SHIPPED}", *options, f"--out={out}",
                            "--max_iters=3", "--eval_interval=3", "--eval_iters=1", "--batch_size=4", "--device=cpu",
                            "--progress=false", "--notes="])
    return out


def test_from_the_shipped_model_the_head_alone_trains(tmp_path):
    out = three_steps_from_the_shipped_model(tmp_path, "head.pt", "--trainable=head")
    base, state = load_checkpoint(str(SHIPPED))["model"], load_checkpoint(str(out))
    body = {name.removeprefix("gpt."): t for name, t in state["model"].items() if name.startswith("gpt.")}
    assert all(torch.equal(body[name], base[name]) for name in body)  # the GPT frozen...
    assert set(base) - set(body) == {"lm_head.weight", "lm_head.bias"}  # ...its output layer replaced by the head
    assert state["classifier"]["trainable"] == "head" and state["model"]["head.weight"].abs().sum() > 0


def test_lora_adapters_train_beside_the_head_and_the_file_loads_alone(tmp_path):
    out = three_steps_from_the_shipped_model(tmp_path, "lora.pt", "--lora_rank=2")
    state = load_checkpoint(str(out))
    assert any("lora_B" in name for name in state["model"]) and "lora" not in state
    probabilities = Labeller(str(out), "cpu").probabilities(["abcab"])[0]
    assert set(probabilities) == {"abc", "xyz"} and abs(sum(probabilities.values()) - 1) < 1e-5


# ----------------------------------------------------------------------------------------------
# Bad files


@pytest.mark.parametrize("rows, header, fragment", [
    ([("hello", "a"), ("there", "a"), ("you", "a")], ("text", "label"), "only the label 'a'"),
    ([("hello", "a"), ("", "b"), ("you", "b")], ("text", "label"), "row 3 has an empty text"),
    ([("hello", "a"), ("you", "b")], ("text", "author"), "no 'label' column"),
    ([("hi", "a")] * 5 + [("yo", "b")] * 2, ("text", "label"), "'b' has 2 row(s)"),
])
def test_bad_files_are_refused_with_one_clear_message(tmp_path, rows, header, fragment):
    data = write_csv(tmp_path / "bad.csv", rows, header)
    with pytest.raises(UserError) as caught:
        train(tmp_path, data, "model", "--max_iters=1")
    assert fragment in str(caught.value)


def test_columns_name_other_fields_and_jsonl_reads_the_same(tmp_path):
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps({"message": t, "who": label}) + "\n" for t, label in separable_rows(9)))
    assert read_labelled(str(jsonl), "text=message,label=who") == separable_rows(9)
    split = stratified_split(separable_rows(40), 0.1, 0.2, seed=1)
    for name, share in (("test", 4), ("val", 2)):  # each class in the same proportion
        assert sorted(label for _, label in split[name]).count("abc") == share
    assert sum(map(len, split.values())) == 40


@pytest.mark.slow  # a real process
def test_a_bad_file_from_the_command_line_exits_with_one_line(tmp_path):
    data = write_csv(tmp_path / "bad.csv", [("hello", "a"), ("there", "a"), ("you", "a")])
    result = run_command("gpt_final_version.py", "--task=classify", f"--data={data}", f"--out={tmp_path / 'x.pt'}")
    assert_clean_error(result, "a classifier needs texts of at least two labels")
    assert not (tmp_path / "x.pt").exists()


def test_classifier_options_validate():
    with pytest.raises(UserError, match="pooling"):
        ClassifyConfig(pooling="max").validate()
    with pytest.raises(UserError, match="last_blocks"):
        ClassifyConfig(trainable="last", last_blocks=5).validate(n_layer=4)


# ----------------------------------------------------------------------------------------------
# Use: model_handler.py --classify, POST /classify, chat_data.py --senders


def test_model_handler_prints_the_label_and_probabilities(classifier, tmp_path, capsys):
    found = model_handler.main([str(classifier), "--classify=abcabca", "--device=cpu"])
    line = capsys.readouterr().out.strip()
    assert line.split("\t")[0] == "abc" == max(found[0], key=found[0].get)
    assert abs(sum(found[0].values()) - 1) < 1e-5 and "xyz 0." in line
    lines = tmp_path / "lines.txt"
    lines.write_text("xyzzy\n\nabca\nzzx\n")
    found = model_handler.main([str(classifier), f"--classify_file={lines}", "--device=cpu"])
    labels = [row.split("\t")[0] for row in capsys.readouterr().out.strip().splitlines()]
    assert labels == ["xyz", "abc", "xyz"] and len(found) == 3
    with pytest.raises(UserError, match="is a classifier"):
        model_handler.main([str(classifier), "--prompt=abc"])


def test_the_classify_endpoint_answers_with_probabilities(classifier):
    from model_handler import ModelHandler
    from serving.server import ServeConfig, make_server

    config = ServeConfig(port=0, device="cpu", classifier=str(classifier), batching=False)
    server = make_server(ModelHandler(str(SHIPPED), "cpu").load(), config)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def post(body: bytes):
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
        connection.request("POST", "/classify", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    try:
        status, answer = post(json.dumps({"text": "zyxzy"}).encode())
        assert status == 200 and answer["label"] == "xyz" and abs(sum(answer["probabilities"].values()) - 1) < 1e-5
        status, answer = post(json.dumps({"texts": ["abc", "zzz"]}).encode())
        assert status == 200 and [r["label"] for r in answer["results"]] == ["abc", "xyz"]
        status, answer = post(b"{not json")
        assert status == 400 and "not valid JSON" in answer["error"]["message"]
        status, answer = post(json.dumps({"text": 3}).encode())
        assert status == 400 and answer["error"]["param"] == "text"
        status, answer = post(json.dumps({"text": "qqq"}).encode())  # nothing the model knows
        assert status == 400 and "no character" in answer["error"]["message"]
    finally:
        server.shutdown()
        server.server_close()


def test_chat_data_writes_each_message_with_its_sender(tmp_path):
    out = tmp_path / "senders.jsonl"
    senders = chat_data_main([str(ROOT / "tests/fixtures/chats/whatsapp_android.txt"), "--senders", f"--out={out}"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(senders) >= 2 and sum(senders.values()) == len(rows)
    assert all(row["text"] and row["label"] in senders for row in rows)


# ----------------------------------------------------------------------------------------------
# Hub models: GPT-2 and a Llama, tiny and random, with the real tokenizers' files (no weights are
# shared with this project; the heads train all the same)


def shared_data(name: str) -> Path | None:
    return next((p / "shared" / "data" / name for p in ROOT.parents[:3] if (p / "shared" / "data" / name).is_dir()), None)


@pytest.mark.slow  # builds the models with transformers
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_head_on_a_hub_model_trains_and_labels_in_its_tokens(family, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    import shutil
    files = {"gpt2": ("gpt2", ["encoder.json", "vocab.bpe"]),
             "llama": ("smollm2-135m-instruct", ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"])}
    folder, names = files[family]
    source = shared_data(folder)
    if source is None:
        pytest.skip(f"no shared/data/{folder} (the tokenizer files)")
    torch.manual_seed(0)
    if family == "gpt2":
        config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=50257)
        transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "hub")
    else:
        config = transformers.LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                          tie_word_embeddings=True)
        transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hub")
    for name in names:
        shutil.copy(source / name, tmp_path / "hub" / name)
    data = write_csv(tmp_path / "toy_data.csv", [(f"{'cats purr' if i % 2 else 'dogs bark'} {i}", "ab"[i % 2]) for i in range(24)])
    out = tmp_path / "hub.pt"
    result = gpt_final_version.main(["--task=classify", f"--data={data}", f"--init_from={tmp_path / 'hub'}",
                                     "--trainable=last", f"--out={out}", "--max_iters=4", "--eval_interval=4",
                                     "--eval_iters=1", "--batch_size=4", "--device=cpu", "--progress=false", "--notes="])
    assert result.test_metrics["examples"] == 2  # one of each label: a tenth of 12, at least one
    labeller = Labeller(str(out), "cpu")
    assert labeller.vocab.kind == ("gpt2" if family == "gpt2" else "hub")
    assert set(labeller.probabilities(["cats purr 99"])[0]) == {"a", "b"}


def test_help_names_the_classifier_options(capsys):
    assert gpt_final_version.main(["--task=classify", "--help"]) is None
    shown = capsys.readouterr().out
    assert "--pooling" in shown and "--trainable" in shown and "--columns" in shown


def test_a_resumed_classifier_keeps_what_shapes_it(classifier, tmp_path):
    with pytest.raises(UserError, match="keeps it"):
        gpt_final_version.main(["--task=classify", f"--resume={classifier}", "--trainable=head",
                                f"--out={tmp_path / 'again.pt'}", "--device=cpu"])
