"""The Ollama Modelfile (issue 27, point 4): its TEMPLATE, rendered as Ollama renders a chat, gives
byte for byte the text our training laid each reply's conversation out as: a hub ChatML model's
(SmolLM2's and Qwen2.5's real tokenizer files, with and without the persona), and a character chat
model's markers. Rendered by a small Go-template interpreter below (the constructs the export
writes), by Go's own text/template where `go` is installed, and, where llama-cpp-python is, llama.cpp's
tokenizer reads the rendered text from our GGUF as the prompt ids training used."""
import ast
import functools
import json
import re
import shutil
import subprocess

import pytest
from test_hub_llama import SMOLLM2

from config import SampleConfig
from gptlib import export_ollama
from gptlib.chat_format import CHAT_MARKERS, exchange_text, persona_prompt
from gptlib.errors import UserError
from gptlib.run_data import laid_out_pairs
from gptlib.tokenizer import CharTokenizer

QWEN = None if SMOLLM2 is None else SMOLLM2.parent / "qwen2.5-0.5b-instruct"
needs_hub_files = pytest.mark.skipif(SMOLLM2 is None, reason="no ../shared/data/smollm2-135m-instruct")

# One session of a two-person chat, as chat_data.py writes it: each of my replies with the turns before it.
SESSION = [("Привет! 😀 ты где?", False), ("дома, а ты? 🏠", True), ("Lunch tomorrow? 🍜 \"quoted\" {{ braces }}", False),
           ("yes, 1 pm 👍\nsecond line", True), ("где встречаемся? 👩‍👩‍👧", False), ("у фонтана ✨", True)]


def pairs_file(tmp_path):
    records = []
    for i, (text, mine) in enumerate(SESSION):
        if mine:
            context = [{"speaker": None, "text": t, "mine": m} for t, m in SESSION[:i]]
            records.append({"input": SESSION[i - 1][0], "output": text, "context": context, "me": "Ana"})
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path, records


def ollama_messages(record, system=""):
    """The chat a client sends Ollama for this reply: the system prompt, then each turn as a message."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "assistant" if t["mine"] else "user", "content": t["text"]} for t in record["context"]]


# ----------------------------------------------------------------------------------------------
# A Go text/template interpreter for the constructs export_ollama writes: text, {{ .Field }},
# {{ "literal" }}, if / else if / else / end, range $i, $_ := .Messages, and the functions
# eq, le, len, slice, with Ollama's values (System joined from the system messages, Messages).

ACTION = re.compile(r'\{\{((?:[^"}]|"(?:[^"\\]|\\.)*"|\}(?!\}))*)\}\}')
WORD = re.compile(r'\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+')


def parse(source):
    """The template as a tree: ("text", s), ("out", words), ("if", [(words, body)], else_body), ("range", words, body)."""
    pieces = []
    at = 0
    for match in ACTION.finditer(source):
        pieces += [("text", source[at:match.start()]), ("action", match.group(1).strip())]
        at = match.end()
    pieces.append(("text", source[at:]))
    tree, rest = block(pieces, 0)
    assert rest == len(pieces), "an {{ end }} too many"
    return tree


def block(pieces, i):
    nodes = []
    while i < len(pieces):
        kind, value = pieces[i]
        words = WORD.findall(value) if kind == "action" else []
        if kind == "text":
            nodes.append(("text", value))
        elif words[0] in ("end", "else"):
            return nodes, i
        elif words[0] == "if":
            branches, other = [], []
            condition = words[1:]
            while True:
                body, i = block(pieces, i + 1)
                branches.append((condition, body))
                closing = WORD.findall(pieces[i][1])
                if closing[:2] == ["else", "if"]:
                    condition = closing[2:]
                    continue
                if closing == ["else"]:
                    other, i = block(pieces, i + 1)
                break
            nodes.append(("if", branches, other))
        elif words[0] == "range":
            assert words[1:4] == ["$i,", "$_", ":="], words
            body, i = block(pieces, i + 1)
            nodes.append(("range", words[4:], body))
        else:
            nodes.append(("out", words))
        i += 1
    return nodes, i


def evaluate(words, dot, root, names):
    value, rest = command(words, dot, root, names)
    assert not rest, rest
    return value


def command(words, dot, root, names):
    """A command (a function and its arguments, or one value); returns it and the words left."""
    functions = {"eq": lambda a, b: a == b, "le": lambda a, b: a <= b, "len": len, "slice": lambda s, i: s[i:]}
    if words[0] in functions:
        args, rest = [], words[1:]
        while rest and rest[0] != ")":
            arg, rest = operand(rest, dot, root, names)
            args.append(arg)
        return functions[words[0]](*args), rest
    return operand(words, dot, root, names)


def operand(words, dot, root, names):
    word, rest = words[0], words[1:]
    if word == "(":
        value, rest = command(rest, dot, root, names)
        assert rest[0] == ")"
        return value, rest[1:]
    if word.startswith('"'):
        return ast.literal_eval(word), rest  # Go's \x01, \U0001f600, \" and \\ mean what Python's do
    if word.isdigit():
        return int(word), rest
    if word.startswith("$."):
        return root.get(word[2:], ""), rest
    if word.startswith("$"):
        return names[word], rest
    assert word.startswith("."), word
    return dot.get(word[1:], ""), rest  # missingkey=zero, as Ollama parses templates


def run(nodes, dot, root, names):
    out = ""
    for node in nodes:
        if node[0] == "text":
            out += node[1]
        elif node[0] == "out":
            out += str(evaluate(node[1], dot, root, names))
        elif node[0] == "if":
            taken = next((body for condition, body in node[1] if evaluate(condition, dot, root, names)), node[2])
            out += run(taken, dot, root, names)
        else:
            for i, item in enumerate(evaluate(node[1], dot, root, names)):
                out += run(node[2], item, root, {**names, "$i": i})
    return out


def ollama_values(messages):
    """What Ollama gives a template that ranges over .Messages (template.Execute, collate): System,
    the system messages joined; Messages, consecutive messages of one role merged."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    collated = []
    for m in messages:
        if collated and collated[-1]["Role"] == m["role"]:
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"]})
    return {"System": system, "Messages": collated}


def render(template, messages):
    values = ollama_values(messages)
    return run(parse(template), values, values, {})


def template_of(modelfile_text):
    """The TEMPLATE of a Modelfile, as Ollama's parser reads it (between the triple quotes); its
    parser keeps only printable characters, spaces and newlines, so nothing else may be there."""
    assert all(ch.isprintable() or ch in " \n" for ch in modelfile_text)
    return re.search(r'^TEMPLATE """(.*?)"""$', modelfile_text, re.S | re.M).group(1)


# ----------------------------------------------------------------------------------------------
# The templates against the training layouts

# A Llama 3-shaped template (no Llama 3 files are here): the beginning-of-text token, a system turn
# that is always there with a knowledge date before its content, headers, <|eot_id|>, trimmed content.
LLAMA3_SHAPED = (
    "{{- bos_token }}{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023\\n\\n' + system + '<|eot_id|>' }}"
    "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")


@functools.lru_cache(maxsize=None)  # read once: Qwen's tokenizer.json takes a second (the tests do not change it)
def hub_vocab(model):
    from gptlib.hf_tokenizer import HubTokenizer

    if model != "llama3-shaped":
        return HubTokenizer.from_directory(SMOLLM2 if model == "smollm2" else QWEN)
    from tokenizers import AddedToken, Tokenizer
    backend = Tokenizer.from_file(str(SMOLLM2 / "tokenizer.json"))
    backend.add_special_tokens([AddedToken(t, special=True) for t in
                                ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")])
    return HubTokenizer(backend.to_str(), {"chat_template": LLAMA3_SHAPED, "bos_token": "<|begin_of_text|>",
                                           "eos_token": "<|eot_id|>"})


@needs_hub_files
@pytest.mark.parametrize("model", ["smollm2", pytest.param("qwen2.5", marks=pytest.mark.slow), "llama3-shaped"])  # Qwen's
# tokenizer.json takes two seconds to read: the same ChatML, another default system prompt and two end tokens
@pytest.mark.parametrize("persona", ["", "Ana"])
def test_a_hub_template_renders_what_training_laid_out(model, persona, tmp_path):
    from gptlib.chat_template import render as jinja_render
    from gptlib.template_pairs import TemplatePairBatches

    vocab = hub_vocab(model)
    end_of_turn = vocab.eos_token
    system = persona_prompt(persona) if persona else ""
    path, records = pairs_file(tmp_path)
    for context_turns in (0, 4):  # the whole session, and the last exchange before their message only
        text = export_ollama.modelfile("me.gguf", vocab, 2048, system, context_turns)
        assert (f'SYSTEM """{system}"""' in text) == bool(persona)
        pairs, laid_out = laid_out_pairs(str(path), context_turns)
        training = TemplatePairBatches(pairs, vocab, laid_out=laid_out, system=system)  # as run_data builds it
        for (their, mine), record in zip(pairs, records):
            trained = jinja_render(vocab, training.messages(their), add_generation_prompt=True)
            assert render(template_of(text), ollama_messages(record, system)) == trained
            whole = jinja_render(vocab, training.messages(their) + [{"role": "assistant", "content": mine}])
            assert whole.startswith(trained + mine + end_of_turn)  # the reply, then the stop below
    turn_start = "<|start_header_id|>" if model == "llama3-shaped" else "<|im_start|>"
    assert f'PARAMETER stop "{end_of_turn}"' in text and f'PARAMETER stop "{turn_start}"' in text
    assert ("trims each message" in text) == (model == "llama3-shaped")
    assert "PARAMETER num_ctx 2048" in text and f"PARAMETER temperature {SampleConfig().temperature:g}" in text
    assert text.splitlines()[1] == "FROM ./me.gguf"


def test_a_character_chat_model_template_renders_our_markers(tmp_path):
    path, records = pairs_file(tmp_path)
    vocab = CharTokenizer.from_text("".join(t for t, _ in SESSION) + "".join(CHAT_MARKERS))
    for context_turns in (0, 1, 4):
        text = export_ollama.modelfile("me.gguf", vocab, 256, context_turns=context_turns)
        assert all(mark not in text for mark in CHAT_MARKERS)  # Ollama's parser would drop control characters
        pairs, _ = laid_out_pairs(str(path), context_turns)
        for (their, mine), record in zip(pairs, records):
            prompt = render(template_of(text), ollama_messages(record, system="ignored: ours have no system turn"))
            trained = exchange_text(their, mine)  # the text training learns the reply from (layout_pair)
            assert trained == prompt + mine + CHAT_MARKERS[2]
    assert "SYSTEM" not in text and "PARAMETER stop" not in text
    assert "# U+0003 ends a reply as the GGUF's end token" in text and "# U+0001 (their turn) cannot be a stop" in text
    with pytest.raises(UserError, match="trained without a system prompt"):
        export_ollama.modelfile("me.gguf", vocab, 256, system="You are Ana.")


def test_what_has_no_chat_layout_or_an_untranslatable_template_is_refused(tmp_path):
    text_model = CharTokenizer.from_text("abc")  # no chat: the prompt is continued as it is
    assert template_of(export_ollama.modelfile("shakespeare.gguf", text_model, 64)) == "{{ .Prompt }}"
    with pytest.raises(UserError, match="not trained on chat pairs"):
        export_ollama.layout_of(text_model)
    with pytest.raises(UserError, match="not trained on chat pairs, so it has no system prompt"):
        export_ollama.modelfile("shakespeare.gguf", text_model, 64, system="You are Ana.")
    if SMOLLM2 is None:
        return
    from gptlib.hf_tokenizer import HubTokenizer

    vocab = HubTokenizer.from_directory(SMOLLM2)
    template = vocab.config["chat_template"]
    assert "'<|im_end|>' + '\n'" in template
    vocab.config = {**vocab.config, "chat_template": template.replace("'<|im_end|>' + '\n'", "'<|im_end|>'")}
    with pytest.raises(UserError, match=r"lays out a conversation in a way the Ollama template would not"):
        export_ollama.modelfile("me.gguf", vocab, 64)  # ChatML tokens, another layout: refused, not guessed
    vocab.specials = {k: v for k, v in vocab.specials.items() if k != "<|im_start|>"}
    with pytest.raises(UserError, match="none of the turn layouts"):
        export_ollama.modelfile("me.gguf", vocab, 64)
    written = export_ollama.write_modelfile(str(tmp_path / "Modelfile"), "me.gguf", HubTokenizer.from_directory(SMOLLM2), 64)
    assert (tmp_path / "Modelfile").read_text(encoding="utf-8") == written


# ----------------------------------------------------------------------------------------------
# Go's own text/template, where Go is installed (Debian: apt-get install golang-go)

GO_PROGRAM = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

func main() {
	source, _ := os.ReadFile(os.Args[1])
	var values map[string]any
	data, _ := os.ReadFile(os.Args[2])
	if err := json.Unmarshal(data, &values); err != nil {
		panic(err)
	}
	tmpl := template.Must(template.New("").Option("missingkey=zero").Parse(string(source)))
	if err := tmpl.Execute(os.Stdout, values); err != nil {
		panic(err)
	}
}
"""


@pytest.mark.slow  # builds and runs a Go program
@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain (apt-get install golang-go)")
def test_go_text_template_renders_the_same_text(tmp_path):
    (tmp_path / "render.go").write_text(GO_PROGRAM)
    build = subprocess.run(["go", "build", "-o", str(tmp_path / "render"), str(tmp_path / "render.go")],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path, env={
                               **__import__("os").environ, "GO111MODULE": "off"})
    assert build.returncode == 0, build.stderr
    _, records = pairs_file(tmp_path)
    vocabularies = [CharTokenizer.from_text("".join(t for t, _ in SESSION) + "".join(CHAT_MARKERS))]
    if SMOLLM2 is not None:
        from gptlib.hf_tokenizer import HubTokenizer
        vocabularies.append(HubTokenizer.from_directory(SMOLLM2))
    for vocab in vocabularies:
        system = persona_prompt("Ana") if vocab.kind == "hub" else ""
        template = template_of(export_ollama.modelfile("me.gguf", vocab, 256, system, context_turns=4))
        (tmp_path / "template").write_text(template, encoding="utf-8")
        for record in records:
            messages = ollama_messages(record, system)
            (tmp_path / "values.json").write_text(json.dumps(ollama_values(messages)), encoding="utf-8")
            go = subprocess.run([str(tmp_path / "render"), str(tmp_path / "template"), str(tmp_path / "values.json")],
                                capture_output=True, timeout=60)
            assert go.returncode == 0, go.stderr
            assert go.stdout.decode("utf-8") == render(template, messages)


# ----------------------------------------------------------------------------------------------
# llama.cpp's own tokenizer (llama-cpp-python, where installed) reads the rendered text as our ids


@pytest.mark.slow  # a GGUF export each, and llama.cpp's loader
@pytest.mark.parametrize("kind", ["char", "bpe", pytest.param("smollm2", marks=needs_hub_files)])
def test_llama_cpp_tokenizes_the_rendered_template_into_the_ids_we_trained_on(kind, tmp_path):
    """What Ollama does with a chat: render the TEMPLATE, tokenize the text with its special tokens
    read as such (the GGUF's table), generate. The ids must be the prompt ids of training."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from test_export_hf import gpt2_shaped

    from gptlib.export_gguf import export_gguf
    from gptlib.tokenizer import ByteBPE

    path, records = pairs_file(tmp_path)
    pairs, laid_out = laid_out_pairs(str(path), 0)
    session_text = "".join(t for t, _ in SESSION)
    system = ""
    if kind == "smollm2":
        from test_hub_llama import smollm2_chat_body

        from gptlib.chat_template import generation_prompt_ids
        from gptlib.template_pairs import TemplatePairBatches
        from model_handler import ModelHandler
        smollm2_chat_body(tmp_path / "hub")
        handler = ModelHandler(str(tmp_path / "hub"), "cpu").load()
        model, vocab, system = handler.model, handler.vocab, persona_prompt("Ana")
        training = TemplatePairBatches(pairs, vocab, laid_out=laid_out, system=system)
        expected = [generation_prompt_ids(vocab, training.messages(their)) for their, _ in pairs]
    else:
        vocab = CharTokenizer.from_text(session_text + "".join(CHAT_MARKERS)) if kind == "char" else \
            ByteBPE.train(session_text * 3, 300)
        model = gpt2_shaped(len(vocab))
        expected = [vocab.encode_with_specials(exchange_text(their, "")[:-1]) for their, _ in pairs]  # up to OUTPUT
    export_gguf(model, vocab, str(tmp_path / "me.gguf"), dtype="float32")
    template = template_of(export_ollama.modelfile("me.gguf", vocab, model.config.block_size, system))
    llm = llama_cpp.Llama(model_path=str(tmp_path / "me.gguf"), vocab_only=True, verbose=False)
    for record, ids in zip(records, expected):
        text = render(template, ollama_messages(record, system))
        assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == ids
