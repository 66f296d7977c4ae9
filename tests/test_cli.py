"""The real command line in a subprocess: bad input gets one clear message, a non-zero exit status
and no traceback; sampling prints text that begins with the prompt, the same for the same seed."""
import pytest
from conftest import ROOT, assert_clean_error, run_command, tiny_run_args

pytestmark = pytest.mark.slow  # real processes: the whole module is in the slow tier


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shakespeare_path):
    """A checkpoint made by the real training command, shared by the tests of this file."""
    folder = tmp_path_factory.mktemp("cli")
    corpus = folder / "small.txt"
    corpus.write_text(shakespeare_path.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    out = folder / "model.pt"
    result = run_command("gpt_final_version.py", *tiny_run_args(corpus, out, max_iters=30))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("final: iters=30 ")
    return out


def test_sampling_prints_samples_that_begin_with_the_prompt_and_repeat_for_a_seed(trained, tmp_path):
    args = ("model_handler.py", trained, "--prompt=ROMEO:", "--max_new_tokens=60", "--temperature=0.8",
            "--top_k=50", "--num_samples=2", "--seed=1337", f"--out={tmp_path / 's.txt'}")
    first, second = run_command(*args), run_command(*args)
    assert first.returncode == 0, first.stderr
    samples = first.stdout.split("\n" + "-" * 40 + "\n")
    assert len(samples) == 2 and all(s.startswith("ROMEO:") for s in samples)
    assert first.stdout == second.stdout
    assert (tmp_path / "s.txt").read_text(encoding="utf-8").startswith("ROMEO:")
    other = run_command(*args[:-2], "--seed=1", f"--out={tmp_path / 'o.txt'}")
    assert other.stdout != first.stdout


def test_a_prompt_character_outside_the_vocabulary_is_named(trained):
    assert_clean_error(run_command("model_handler.py", trained, "--prompt=ROMEO€"), "'€'", "vocabulary")


@pytest.mark.parametrize("content, why", [
    (b"", "the file is empty"),
    (b"\x00\x01garbage" * 100, "not a PyTorch file"),
    (b"PK\x03\x04truncated", "damaged or truncated"),
])
def test_a_malformed_checkpoint_gets_a_clear_message(tmp_path, content, why):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    assert_clean_error(run_command("model_handler.py", bad), why)
    assert_clean_error(run_command("gpt_final_version.py", f"--resume={bad}"), why)
    assert bad.read_bytes() == content  # nothing overwritten


def test_a_truncated_real_checkpoint_gets_a_clear_message(trained, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(trained.read_bytes()[:20_000])
    assert_clean_error(run_command("model_handler.py", cut), "damaged or truncated")


def test_missing_checkpoint(tmp_path):
    assert_clean_error(run_command("model_handler.py", tmp_path / "nope.pt"), "does not exist")
    assert_clean_error(run_command("model_handler.py"), "no checkpoint given")


@pytest.mark.parametrize("args, fragments", [
    (["--n_layers=3"], ["unknown option --n_layers", "did you mean --n_layer?"]),
    (["--max_iters=lots"], ["--max_iters='lots'", "whole number"]),
    (["--n_embd=100", "--n_head=6"], ["not divisible by n_head=6"]),
    (["--preset=gpuu"], ["unknown preset 'gpuu'"]),
    (["--device=cuda"], ["no CUDA GPU"]),
])
def test_bad_options_are_refused_before_any_work(args, fragments):
    assert_clean_error(run_command("gpt_final_version.py", *args), *fragments)


def test_bad_training_text(tmp_path):
    empty, latin1, short = tmp_path / "empty.txt", tmp_path / "latin1.txt", tmp_path / "short.txt"
    empty.write_text("")
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 100)
    short.write_text("To be.\n")  # shorter than the bigram context of 8
    assert_clean_error(run_command("gpt_final_version.py", f"--data={tmp_path / 'missing.txt'}"), "does not exist", "--data")
    assert_clean_error(run_command("gpt_final_version.py", f"--data={empty}"), "is empty")
    assert_clean_error(run_command("gpt_final_version.py", f"--data={latin1}"), "not UTF-8", "0xe9")
    assert_clean_error(run_command("bigram.py", f"--data={short}"), "--block_size")


def test_offline_without_a_local_corpus_names_both_ways_out(tmp_path):
    """Run from an empty folder, so the default corpus is missing; a proxy on a closed local port
    makes the download fail at once, as it would offline."""
    closed = "http://127.0.0.1:9"
    result = run_command(ROOT / "gpt_final_version.py", "--preset=tiny", cwd=tmp_path,
                         env={"https_proxy": closed, "HTTPS_PROXY": closed})
    assert_clean_error(result, "download failed", "--data=PATH")
    assert not (tmp_path / "data/tinyshakespeare/input.txt").exists()


def test_help_lists_options_and_presets():
    result = run_command("gpt_final_version.py", "--help")
    assert result.returncode == 0
    for fragment in ("--n_layer=6", "--max_iters=5000", "--learning_rate=0.001", "Presets", "nanogpt-cpu"):
        assert fragment in result.stdout
