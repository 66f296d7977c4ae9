"""Loss curves: the CSV reads back what was written (a cut last line dropped), the pictures are real
PNGs, and without matplotlib a run still gets its CSV while --compare says how to get the picture."""
import subprocess
import sys

import pytest
from conftest import ROOT

from gptlib.errors import UserError
from gptlib.loss_curves import (
    PLOT_INSTALL,
    curve_paths,
    missing_matplotlib_hint,
    plot_comparison,
    plot_run,
    read_csv,
    write_csv,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_rows(steps=400, every=50, eval_every=100, tokens_per_step=2048, final_loss=1.5):
    """A plausible run: the loss falls from ln(65), evaluated every `eval_every` steps."""
    rows = []
    for step in range(0, steps + 1, every):
        loss = final_loss + (4.1744 - final_loss) * 0.99 ** step
        rows.append(dict(step=step, tokens=step * tokens_per_step, train_loss=loss - 0.05,
                         val_loss=loss if step % eval_every == 0 else None, learning_rate=3e-5 + step * 1e-6,
                         tokens_per_s=6400.5, seconds=step * 0.3))
    return rows


def test_csv_round_trip_keeps_header_empty_cells_and_precision(tmp_path):
    rows = make_rows()
    path = tmp_path / "run.csv"
    write_csv(rows, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "step,tokens,train_loss,val_loss,learning_rate,tokens_per_s,seconds"
    assert lines[2].split(",")[3] == ""  # step 50 has no evaluation
    assert lines[1].split(",")[4] == "3.000e-05"  # a small learning rate keeps its digits
    back = read_csv(path)
    assert len(back) == len(rows)
    for original, read in zip(rows, back):
        assert read["step"] == original["step"] and isinstance(read["step"], int)
        assert read["tokens"] == original["tokens"] and isinstance(read["tokens"], int)
        assert read["train_loss"] == pytest.approx(original["train_loss"], abs=5e-5)
        assert read["learning_rate"] == pytest.approx(original["learning_rate"], rel=1e-3)
        assert read["seconds"] == pytest.approx(original["seconds"], abs=0.005)
        if original["val_loss"] is None:
            assert read["val_loss"] is None
        else:
            assert read["val_loss"] == pytest.approx(original["val_loss"], abs=5e-5)


def test_a_cut_last_line_is_dropped(tmp_path):
    path = tmp_path / "run.csv"
    write_csv(make_rows(), path)
    text = path.read_text(encoding="utf-8")
    path.write_text(text[:-12], encoding="utf-8")  # killed while the last row was half written
    assert [row["step"] for row in read_csv(path)] == list(range(0, 351, 50))


def test_up_to_step_drops_rows_a_resumed_run_will_write_again(tmp_path):
    path = tmp_path / "run.csv"
    write_csv(make_rows(), path)
    assert read_csv(path, up_to_step=200)[-1]["step"] == 200


def test_a_bad_line_before_the_last_or_a_foreign_file_is_a_user_error(tmp_path):
    path = tmp_path / "run.csv"
    write_csv(make_rows(), path)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[3] = "150,oops"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 4"):
        read_csv(path)
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(UserError, match="not a loss curve"):
        read_csv(path)
    with pytest.raises(UserError, match="cannot read"):
        read_csv(tmp_path / "absent.csv")


def test_paths_and_hint_name_the_run():
    assert [p.name for p in curve_paths("models/run.pt")] == ["run.csv", "run.png"]
    hint = missing_matplotlib_hint("models/run.pt")
    assert PLOT_INSTALL in hint and "models/run.pt --compare=models/run.png" in hint
    assert "models/run.csv" in hint and "\n" not in hint


def assert_is_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_plot_run_writes_a_png_also_for_a_single_row(tmp_path):
    pytest.importorskip("matplotlib")
    assert plot_run(make_rows(), tmp_path / "run.png", "run (preset tiny)")
    assert_is_png(tmp_path / "run.png")
    assert plot_run(make_rows(steps=0), tmp_path / "one.png", "one row")
    assert tmp_path.joinpath("one.png").read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "run.png"]  # no temporaries left


def test_plot_comparison_writes_one_png_for_several_runs(tmp_path):
    pytest.importorskip("matplotlib")
    runs = [("bigram", make_rows(tokens_per_step=256, final_loss=2.5)), ("cpu", make_rows())]
    plot_comparison(runs, tmp_path / "runs.png")
    assert_is_png(tmp_path / "runs.png")


def test_plot_comparison_names_an_empty_or_unevaluated_run(tmp_path):
    unevaluated = [dict(row, val_loss=None) for row in make_rows()]
    for rows, message in (([], "run empty-run has an empty loss curve"),
                          (unevaluated, "run empty-run has no validation loss")):
        with pytest.raises(UserError, match=message):
            plot_comparison([("good", make_rows()), ("empty-run", rows)], tmp_path / "runs.png")
    with pytest.raises(UserError, match="at least one run"):
        plot_comparison([], tmp_path / "runs.png")
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_the_run_skips_its_picture_and_compare_says_how(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib` now raises ImportError
    assert plot_run(make_rows(), tmp_path / "run.png", "run") is False
    with pytest.raises(UserError, match=PLOT_INSTALL):
        plot_comparison([("run", make_rows())], tmp_path / "runs.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_importing_the_module_does_not_import_matplotlib():
    code = "import sys; from gptlib import loss_curves; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"



def test_the_tokens_axis_mapping_goes_on_past_the_last_row():
    # Tick locators ask beyond the data; a mapping clamped at the ends piled those ticks on the edge.
    from gptlib.loss_curves import _piecewise_linear
    to_tokens = _piecewise_linear([0, 10, 20], [0, 100, 300])
    assert list(to_tokens([-1, 5, 15, 30])) == [-10, 50, 200, 500]
