"""An Ollama Modelfile for an exported GGUF: the chat layout the model was trained on, as a Go template.

    ollama create me -f Modelfile     # in the folder of me.gguf and its Modelfile
    ollama run me

    text = modelfile("me.gguf", handler.vocab, block_size, system=handler.persona_system,
                     context_turns=handler.context_turns)
    write_modelfile("exported/Modelfile", "me.gguf", handler.vocab, block_size, ...)

A conversation's layout is described once, as a TurnLayout (the text that opens and closes each
role's turn, the system turn, the generation prompt), and both the Go template Ollama renders and
a Python rendering of it come from that description. For a hub model the description is read off
its special tokens (ChatML's <|im_start|>, Llama 3's <|start_header_id|>), its default system
prompt and the like off its own Jinja template, and then the Python rendering must equal the Jinja
template's for a set of probe conversations, or the export is refused: a TEMPLATE that disagrees
with training (another family's headers, a lost end token) cannot be written. Our own chat models
(characters, BPE, GPT-2's tokens with the markers) use chat_format's layout and have no system
turn, as in training and serving.

Ollama's Modelfile parser keeps only printable characters, spaces and newlines of a value, so
text that holds others (our markers are control characters) is written as Go string literals,
{{ "\\x01" }}, which the template turns back into the character. A PARAMETER stop cannot carry such
characters at all: our end marker ends a reply as the GGUF's end token, and the marker of their turn
stops one only where the GGUF counts it among its end-of-generation tokens (a comment says so).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from config import SampleConfig
from gptlib.chat_format import END_MARK, INPUT_MARK, OUTPUT_MARK
from gptlib.errors import UserError
from gptlib.export_tokenizer import is_chat_vocab as has_markers

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class TurnLayout:
    """A conversation as text: begin, then the system turn, then each message's turn (opening text,
    the content, closing text), then the opening of the assistant's turn that asks for the reply."""
    family: str  # "chatml", "llama3" or "markers" (ours)
    opens: dict[str, str]  # role -> the text before its content
    closes: dict[str, str]  # role -> the text after its content
    begin: str = ""  # before everything (the beginning-of-text token)
    system_prefix: str = ""  # inside the system turn before its content (Llama 3.2's knowledge date)
    default_system: str | None = None  # the system turn's content when none is given; None: then no system turn
    has_system: bool = True  # False: a system message is dropped (our chat models have none)
    stops: tuple[str, ...] = ()  # text that ends a reply: the end of turn, the other speakers' turn starts
    trims_content: bool = False  # the model's template strips each message (Llama 3's); Go's cannot

    def render(self, system: str, messages: list[dict], context_turns: int = 0) -> str:
        """The text of a conversation before the reply, as the Go template renders it."""
        text = self.begin
        if self.has_system and (system or self.default_system is not None):
            text += self.opens["system"] + self.system_prefix + (system or self.default_system) + self.closes["system"]
        turns = [m for m in messages if m["role"] != "system"]
        if context_turns:
            turns = turns[-last_messages(context_turns):]
        for message in turns:
            text += self.opens[message["role"]] + message["content"] + self.closes[message["role"]]
        return text + self.opens["assistant"]


def last_messages(context_turns: int) -> int:
    """The messages a reply sees (chat_format.recent_history): their message and the exchanges before it."""
    return 2 * ((context_turns - 1) // 2) + 1


# ----------------------------------------------------------------------------------------------
# The layouts: ours, and a hub model's read off its tokens and checked against its template


def markers_layout() -> TurnLayout:
    """Our chat models' layout (chat_format.exchange_text): INPUT their words OUTPUT my reply END."""
    return TurnLayout("markers", {"user": INPUT_MARK, "assistant": OUTPUT_MARK, "system": ""},
                      {"user": "", "assistant": END_MARK, "system": ""}, has_system=False,
                      stops=(END_MARK, INPUT_MARK))


HUB_FAMILIES = {  # a family's turn, known by its special tokens: (open, close, the turn-start token)
    "chatml": (("<|im_start|>", "<|im_end|>"), "<|im_start|>{role}\n", "<|im_end|>\n", "<|im_start|>"),
    "llama3": (("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
               "<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>", "<|start_header_id|>"),
}
PROBE = {role: f"\u2063{role[0].upper()}{n}\u2063" for n, role in enumerate(ROLES)}  # text no template writes


def hub_layout(vocab) -> TurnLayout:
    """A hub model's layout from its special tokens and chat template, proven on probe conversations."""
    from gptlib.chat_template import render

    user = {"role": "user", "content": PROBE["user"]}
    with_system = render(vocab, [{"role": "system", "content": PROBE["system"]}, user], add_generation_prompt=True)
    family = next((name for name, (tokens, opening, *_) in HUB_FAMILIES.items()  # its tokens, and used so
                   if all(t in vocab.specials for t in tokens) and opening.format(role="user") in with_system), None)
    if family is None:
        raise UserError("this model's chat template uses none of the turn layouts an Ollama template is written "
                        f"for here ({', '.join(HUB_FAMILIES)}: ChatML's <|im_start|>, Llama 3's <|start_header_id|>); "
                        "no Modelfile was written.")
    _, opening, close, turn_start = HUB_FAMILIES[family]
    opens = {role: opening.format(role=role) for role in ROLES}
    closes = dict.fromkeys(ROLES, close)
    before_system = with_system.find(opens["system"])
    inside = with_system.find(PROBE["system"])
    if before_system < 0 or inside < 0:
        raise UserError(f"this model's chat template ({family}) has no system turn where Ollama's would put it; "
                        "no Modelfile was written.")
    begin, prefix = with_system[:before_system], with_system[before_system + len(opens["system"]):inside]
    without = render(vocab, [user], add_generation_prompt=True)
    default = None
    system_start = begin + opens["system"] + prefix
    if without.startswith(system_start):
        default = without[len(system_start):without.find(closes["system"], len(system_start))]
    token_of = {i: token for token, i in vocab.specials.items()}
    stops = tuple(dict.fromkeys([token_of[i] for i in vocab.eos_ids if i in token_of] + [turn_start]))
    layout = TurnLayout(family, opens, closes, begin, prefix, default, stops=stops)
    check_against_template(layout, vocab)
    padded = render(vocab, [{"role": "user", "content": f" {PROBE['user']}\n"}], add_generation_prompt=True)
    if f" {PROBE['user']}\n" not in padded:
        layout = dataclasses.replace(layout, trims_content=True)
    return layout


def probe_conversations() -> list[tuple[str, list[dict]]]:
    """(system, messages) that a layout and a template must render alike."""
    user, mine = PROBE["user"], PROBE["assistant"]
    turns = [{"role": "user", "content": user + "1"}, {"role": "assistant", "content": mine + "1"},
             {"role": "user", "content": user + "2"}, {"role": "assistant", "content": mine + "2"},
             {"role": "user", "content": user + "3"}]
    return [("", turns[:1]), (PROBE["system"], turns[:1]), ("", turns), (PROBE["system"], turns)]


def check_against_template(layout: TurnLayout, vocab) -> None:
    from gptlib.chat_template import render

    for system, messages in probe_conversations():
        given = ([{"role": "system", "content": system}] if system else []) + messages
        theirs, ours = render(vocab, given, add_generation_prompt=True), layout.render(system, messages)
        if theirs != ours:
            at = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
            raise UserError(f"this model's chat template ({layout.family} tokens) lays out a conversation in a way "
                            f"the Ollama template would not (they part at character {at}: {theirs[at:at + 40]!r} "
                            f"against {ours[at:at + 40]!r}); no Modelfile was written.")


def layout_of(vocab) -> TurnLayout:
    """The layout a chat model was trained in: its hub template's, or our markers'."""
    if not is_chat_vocab(vocab):
        raise UserError("this model was not trained on chat pairs (no chat template, no chat markers), so it has "
                        "no conversation layout for Ollama's TEMPLATE; fine-tune it with --data=pairs.jsonl.")
    return hub_layout(vocab) if vocab.kind == "hub" else markers_layout()


# ----------------------------------------------------------------------------------------------
# The Go template and the Modelfile


def is_plain(text: str) -> bool:
    """Text the Modelfile parser keeps as it is and a Go template does not read as an action."""
    return all(ch.isprintable() or ch in " \n" for ch in text) and "{{" not in text and "}}" not in text \
        and '"""' not in text


def go_literal(text: str) -> str:
    """`text` as template output: itself where it is plain, else a Go string literal action."""
    if not text or is_plain(text):
        return text
    quoted = ""
    for ch in text:
        if ch in '"\\':
            quoted += "\\" + ch
        elif ch.isprintable():
            quoted += ch
        else:
            quoted += f"\\x{ord(ch):02x}" if ord(ch) < 0x80 else f"\\U{ord(ch):08x}"
    return '{{ "' + quoted + '" }}'


def go_template(layout: TurnLayout, context_turns: int = 0) -> str:
    """Ollama's TEMPLATE for the layout: .System, then the last messages (context_turns, as training
    cut them), each in its role's turn, then the assistant's opening."""
    out = go_literal(layout.begin)
    if layout.has_system:
        system_open, close = go_literal(layout.opens["system"] + layout.system_prefix), go_literal(layout.closes["system"])
        out += "{{ if .System }}" + system_open + "{{ .System }}" + close
        if layout.default_system is not None:
            out += "{{ else }}" + system_open + go_literal(layout.default_system) + close
        out += "{{ end }}"
    turn = "".join(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}' + go_literal(layout.opens[role])
                   + "{{ .Content }}" + go_literal(layout.closes[role]) for i, role in enumerate(("user", "assistant")))
    turn += "{{ end }}"
    if context_turns:
        turn = f"{{{{ if le (len (slice $.Messages $i)) {last_messages(context_turns)} }}}}" + turn + "{{ end }}"
    return out + "{{ range $i, $_ := .Messages }}" + turn + "{{ end }}" + go_literal(layout.opens["assistant"])


def modelfile(gguf_name: str, vocab, block_size: int, system: str = "", context_turns: int = 0) -> str:
    """The Modelfile text for `gguf_name` (a file beside it): FROM, TEMPLATE, the stops, the sampling
    our --chat uses, num_ctx the block size, and `system` (the persona's prompt) as SYSTEM. A model
    not trained on chats gets a TEMPLATE that continues the prompt as it is (`ollama run me "ROMEO:"`)."""
    if not is_chat_vocab(vocab):
        if system:
            raise UserError("this model was not trained on chat pairs, so it has no system prompt to write.")
        return "\n".join([f"# Ollama: {RUN}   (a text model: it continues the prompt)", f"FROM ./{gguf_name}",
                          'TEMPLATE """{{ .Prompt }}"""', *sampling_lines(block_size)]) + "\n"
    layout = layout_of(vocab)
    lines = [f"# Ollama: {RUN}   (the {layout.family} chat layout the model was trained on)", f"FROM ./{gguf_name}",
             f'TEMPLATE """{go_template(layout, context_turns)}"""']
    if layout.trims_content:
        lines.append("# the model's template trims each message's spaces; this one keeps them: send trimmed text")
    if system:
        if not is_plain(system):
            raise UserError('the persona\'s system prompt has characters a Modelfile cannot hold (control characters '
                            'or """); give --persona a plain name.')
        if not layout.has_system:
            raise UserError("this model was trained without a system prompt; write its Modelfile without one.")
        lines.append(f'SYSTEM """{system}"""')
    written = [stop for stop in layout.stops if is_plain(stop) and '"' not in stop]
    lines += [f'PARAMETER stop "{stop}"' for stop in written]
    for stop in layout.stops:
        if stop not in written:  # our markers: control characters, which Ollama's parser drops from a line
            role = "ends a reply as the GGUF's end token" if stop == layout.stops[0] else \
                "(their turn) cannot be a stop here: the GGUF's end-of-generation tokens must hold it"
            lines.append(f"# U+{ord(stop[0]):04X} {role}; a Modelfile cannot hold control characters")
    return "\n".join(lines + sampling_lines(block_size)) + "\n"


RUN = "ollama create NAME -f Modelfile && ollama run NAME"


def sampling_lines(block_size: int) -> list[str]:
    """The sampling our --chat and --prompt use (SampleConfig), and the context the model was trained with."""
    sampling = SampleConfig()
    return ["# sampling as ours: temperature, the whole distribution (no top_k, top_p or min_p cut), "
            "no repetition penalty", f"PARAMETER temperature {sampling.temperature:g}",
            f"PARAMETER top_k {sampling.top_k}", "PARAMETER top_p 1", "PARAMETER min_p 0", "PARAMETER repeat_penalty 1",
            f"PARAMETER num_ctx {block_size}"]


def is_chat_vocab(vocab) -> bool:
    """Trained on chats: a hub tokenizer with a chat template, or ours with the three markers."""
    if getattr(vocab, "kind", "") == "hub":
        return bool(vocab.config.get("chat_template"))
    return vocab is not None and has_markers(vocab)


def write_modelfile(path: str, gguf_name: str, vocab, block_size: int, system: str = "", context_turns: int = 0) -> str:
    """Write modelfile(...) to `path` (atomically); returns the text."""
    from gptlib.atomic_write import write_text_atomically

    text = modelfile(gguf_name, vocab, block_size, system, context_turns)
    write_text_atomically(str(Path(path)), text)
    return text

