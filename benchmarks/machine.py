"""This machine's facts and every decision the project takes from them (compile, precision, TF32, ...).

    python -m benchmarks.machine                       # the facts and what is chosen from them
    python -m benchmarks.machine --device=cuda:1       # the same for one device
    python -m benchmarks.machine --flash --preset=gpu  # can attention use the flash kernel for those shapes?
"""
from __future__ import annotations

from dataclasses import dataclass

import config
from gptlib import cli, devices
from gptlib.errors import run_cli


@dataclass
class CheckConfig:
    device: str = "auto"  # the device to report on ("auto", "cpu", "cuda:1", "mps")
    flash: bool = False  # also check that attention can use the flash kernel for the preset's shapes


def main(argv: list[str]) -> None:
    args = cli.parse_args(argv, [CheckConfig])
    if args.help:
        print(cli.help_text([CheckConfig], "usage: python -m benchmarks.machine [--device=auto] [--flash] [--preset=gpu]",
                               show_presets=False))
        return
    options = cli.apply(CheckConfig(), args.overrides)
    device = devices.choose_device(options.device)
    facts = devices.probe(device)
    print("\n".join(devices.describe(facts)))
    if options.flash:
        preset = args.preset or devices.default_preset(device)
        model_cfg = cli.apply(config.GPTConfig(), config.preset_values(preset))
        train_cfg = cli.apply(config.TrainConfig(), config.preset_values(preset))
        dtype = devices.choose_dtype("auto", facts).dtype
        works, detail = devices.flash_attention_check(device, model_cfg, train_cfg.batch_size, dtype)
        print(f"  flash attention ({preset} preset): {'yes' if works else 'no'}: {detail}")


if __name__ == "__main__":
    run_cli(main)
