"""The strict `--name=value` parser every command shares, and the `--help` text made from the fields.

Each option is a field of a dataclass (config.py's GPTConfig, TrainConfig, SampleConfig, or a command's
own); its trailing `# comment` in the source is its help line. An unknown option or a value of the wrong
type is a UserError naming the closest valid option.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import typing
from dataclasses import dataclass

from config import PRESETS
from gptlib.errors import UserError


@dataclass
class ParsedArgs:
    overrides: dict  # field name -> converted value, only those given on the command line
    positional: list  # arguments that are not options (e.g. a checkpoint path)
    preset: str | None
    help: bool


def parse_args(argv: list[str], sections: list[type], max_positional: int = 0) -> ParsedArgs:
    """Turn `--name=value` arguments into typed overrides for the fields of `sections`.

    An unknown name or an unconvertible value raises UserError naming the closest valid option.
    A bare `--flag` means `--flag=true` for a boolean field.
    """
    fields = _field_types(sections)
    known = sorted(fields) + ["preset", "help"]
    overrides, positional, preset, want_help = {}, [], None, False
    for arg in argv:
        if not arg.startswith("--"):
            positional.append(arg)
            continue
        name, has_value, value = arg[2:].partition("=")
        if name in ("help", "h") and not has_value:
            want_help = True
        elif name == "preset":
            if value not in PRESETS:
                raise UserError(f"unknown preset {value!r}{_suggest(value, PRESETS, '--preset=')}. "
                                f"Presets: {', '.join(PRESETS)}.")
            preset = value
        elif name in fields:
            if not has_value and fields[name] is not bool:
                raise UserError(f"--{name} needs a value, as in --{name}=VALUE.")
            overrides[name] = _convert(name, value if has_value else "true", fields[name])
        else:
            raise UserError(f"unknown option --{name}{_suggest(name, known)}. See --help for the list.")
    if len(positional) > max_positional:
        extra = positional[max_positional]
        raise UserError(f"unexpected argument {extra!r}: options are written --name=value{_suggest(extra.lstrip('-'), known)}.")
    return ParsedArgs(overrides, positional, preset, want_help)


def apply(obj, values: dict):
    """Return a copy of dataclass `obj` with the entries of `values` that are its fields replaced."""
    names = {f.name for f in dataclasses.fields(obj)}
    return dataclasses.replace(obj, **{k: v for k, v in values.items() if k in names})


def help_text(sections: list[type], usage: str, show_presets: bool = True) -> str:
    lines = [usage, ""]
    for section in sections:
        lines.append(f"{section.__name__}:")
        comments = _field_comments(section)
        for f in dataclasses.fields(section):
            lines.append(f"  --{f.name}={f.default!r}".ljust(44) + f"  {comments.get(f.name, '')}")
        lines.append("")
    if show_presets:
        lines.append("Presets (--preset=NAME; default: gpu on cuda, cpu otherwise):")
        for name, (description, values) in PRESETS.items():
            shown = " ".join(f"{k}={v}" for k, v in values.items())
            lines.append(f"  {name:12s} {description}")
            if shown:
                lines.append(f"  {'':12s}   {shown}")
    return "\n".join(lines)


def _field_types(sections: list[type]) -> dict[str, type]:
    types = {}
    for section in sections:
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            types[f.name] = hints[f.name]
    return types


def _convert(name: str, text: str, kind: type):
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
            raise ValueError
        if kind is int:
            number = float(text)  # accepts 5e3
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float:
            return float(text)
        if name == "prompt":  # let a shell user write a newline as \n
            return text.replace("\\n", "\n").replace("\\t", "\t")
        return text
    except ValueError:
        expected = {bool: "true or false", int: "a whole number", float: "a number"}.get(kind, "text")
        raise UserError(f"--{name}={text!r} is not valid: expected {expected}.") from None


def _suggest(word: str, options, prefix: str = "--") -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _field_comments(section: type) -> dict[str, str]:
    """The trailing `# comment` of each field in the source: the help text lives next to the value."""
    comments = {}
    for line in inspect.getsource(section).splitlines():
        match = re.match(r"\s+(\w+): [^=]+=.*?  # (.*)$", line)
        if match:
            comments[match.group(1)] = match.group(2)
    return comments
