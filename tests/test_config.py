"""The strict --name=value parser, config checks, presets and the device choice."""
import pytest
import torch

import config
from config import GPTConfig, SampleConfig, TrainConfig
from gptlib import cli, devices
from gptlib.cli import help_text, parse_args
from gptlib.devices import choose_device
from gptlib.errors import UserError

SECTIONS = [GPTConfig, TrainConfig]


def test_values_are_converted_to_the_field_types():
    args = parse_args(["--n_layer=3", "--max_iters=5e3", "--learning_rate=3e-4", "--compile=false",
                       "--data=a b.txt", "--progress"], SECTIONS)
    assert args.overrides == {"n_layer": 3, "max_iters": 5000, "learning_rate": 3e-4, "compile": False,
                              "data": "a b.txt", "progress": True}
    assert isinstance(args.overrides["n_layer"], int)


def test_an_unknown_name_is_refused_with_the_closest_valid_one():
    with pytest.raises(UserError, match=r"unknown option --n_layers \(did you mean --n_layer\?\)"):
        parse_args(["--n_layers=4"], SECTIONS)
    with pytest.raises(UserError, match=r"did you mean --learning_rate\?"):
        parse_args(["--learningrate=0.1"], SECTIONS)


@pytest.mark.parametrize("arg, expected", [
    ("--n_layer=four", "expected a whole number"),
    ("--n_layer=2.5", "expected a whole number"),
    ("--dropout=lots", "expected a number"),
    ("--compile=maybe", "expected true or false"),
    ("--n_layer", "needs a value"),
])
def test_a_value_of_the_wrong_type_is_refused(arg, expected):
    with pytest.raises(UserError, match=expected):
        parse_args([arg], SECTIONS)


def test_unknown_preset_and_stray_argument():
    with pytest.raises(UserError, match=r"unknown preset 'cpuu' \(did you mean --preset=cpu\?\)"):
        parse_args(["--preset=cpuu"], SECTIONS)
    with pytest.raises(UserError, match=r"unknown preset 'gpux' \(did you mean --preset=gpu\?\)"):
        parse_args(["--preset=gpux"], SECTIONS)
    with pytest.raises(UserError, match="unexpected argument 'n_layer=3'"):
        parse_args(["n_layer=3"], SECTIONS)


def test_n_embd_must_divide_by_n_head_and_the_message_suggests_a_fix():
    with pytest.raises(UserError, match=r"n_embd=100 is not divisible by n_head=6.*--n_head=5"):
        GPTConfig(n_embd=100, n_head=6).validate()


def test_choices_are_checked_with_a_suggestion():
    with pytest.raises(UserError, match=r"attention='fats'.*did you mean 'fast'"):
        GPTConfig(attention="fats").validate()
    with pytest.raises(UserError, match="dtype='fp8'"):
        TrainConfig(dtype="fp8").validate()


def test_help_lists_every_option_with_its_default_and_comment():
    text = help_text(SECTIONS, "usage")
    for section in SECTIONS:
        for name, value in vars(section()).items():
            line = next(line for line in text.splitlines() if line.strip().startswith(f"--{name}="))
            assert repr(value) in line
            assert len(line.split("  ", 1)[1].strip()) > 10, f"{name} has no comment"
    for preset in config.PRESETS:
        assert f"  {preset} " in text


def test_prompt_accepts_escaped_newlines():
    args = parse_args(["--prompt=ROMEO:\\nJULIET:"], [SampleConfig])
    assert args.overrides["prompt"] == "ROMEO:\nJULIET:"


def test_presets_only_name_real_fields_and_make_valid_configs():
    for name, (_, values) in config.PRESETS.items():
        model_cfg = cli.apply(GPTConfig(), values)
        train_cfg = cli.apply(TrainConfig(), values)
        fields = set(vars(model_cfg)) | set(vars(train_cfg))
        assert set(values) <= fields, name
        model_cfg.validate()
        train_cfg.validate()


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_device_choice_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert choose_device("auto") == expected
    assert choose_device("cpu") == "cpu"
    assert devices.default_preset(expected) == ("gpu" if expected == "cuda" else "cpu")


def test_an_absent_device_that_is_asked_for_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA GPU"):
        choose_device("cuda")
    with pytest.raises(UserError, match="mps is not available"):
        choose_device("mps")
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        choose_device("tpu")
