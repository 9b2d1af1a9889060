"""What a person reads after ``otfgen``: one log per process in the run directory, a progress bar
on a terminal (plain lines otherwise), a step on every metrics row, TensorBoard events, plots."""

import fcntl
import json
import logging
import os
import pty
import re
import struct
import subprocess
import termios
import threading

import pytest
from PIL import Image

from conftest import otfgen_cmd
from otfgen.trainer.plots import si, standard_error

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} otfgen[.\w]* (INFO|WARNING|ERROR|CRITICAL) ")
SMALL = ["controller.request_size=256", "trainer.batch_size=128", "trainer.threads=1", "trainer.log_every_s=0.5"]


def test_tick_labels_and_standard_error():
    assert [si(x) for x in (0, 950, 25_000, 100_000, 125_000, 1_500_000, 2_000_000)] == \
        ["0", "950", "25k", "100k", "125k", "1.5M", "2M"]
    assert standard_error(0.85, 1797) == pytest.approx(0.00842, abs=1e-5)


def test_default_validation_interval_scales_with_the_budget():
    from otfgen.configs.schema import val_interval
    from otfgen.controller.config import compose

    cfg = compose(["budget.samples=20000"])
    assert val_interval(cfg.trainer.val_every, cfg.budget.samples) == 2500  # the smoke run: 8 points
    assert val_interval(None, 200_000) == 25_000 and val_interval(None, 2_000_000) == 25_000
    assert val_interval(None, 1000) == 125
    cfg = compose(["budget.samples=20000", "trainer.val_every=20000"])  # as given
    assert val_interval(cfg.trainer.val_every, cfg.budget.samples) == 20000


@pytest.mark.slow
def test_a_run_is_readable(tmp_path, env):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    p = subprocess.run(otfgen_cmd(f"hydra.run.dir={run_dir}", "budget.samples=2048", "trainer.val_every=1024",
                                  "trainer.tensorboard=true", *SMALL),
                       env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    # every process's lines, in one format, in <run>/<name>.log
    for name, logger in (("launcher", "otfgen.launcher"), ("controller", "otfgen.controller"),
                         ("worker-0", "otfgen.worker"), ("worker-1", "otfgen.worker"), ("trainer", "otfgen.train")):
        lines = (run_dir / f"{name}.log").read_text().splitlines()
        assert lines and all(LINE.match(ln) for ln in lines), (name, lines[:5])
        assert any(f" {logger} " in ln for ln in lines), name
    trainer_log = (run_dir / "trainer.log").read_text()
    # not a terminal: plain progress lines with an ETA, no bar
    assert re.search(r"trainer: +\d+ / 2048 samples .* eta \d+", trainer_log)
    assert re.search(r"trainer: +\d+ / 2048 samples .* eta \d+", p.stderr) and "\r" not in p.stderr
    # the validation says what it measures, how noisy it is, and how to score on real MNIST
    assert "val acc" in trainer_log and "(1 SE) on 1797 scikit-learn 8×8 digits upscaled" in trainer_log
    assert "otfgen-eval --checkpoint" in trainer_log
    assert "restart" not in (run_dir / "launcher.log").read_text()  # workers told to stop are not restarted
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert rows and all(isinstance(r["step"], int) for r in rows)
    val = [r for r in rows if "val/acc" in r]
    assert [r["step"] for r in val] == [r["train/samples"] for r in val] == [1024, 2048]
    # TensorBoard reads back the same figures and both sample grids
    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    acc = ea.Scalars("val/acc")
    assert [e.step for e in acc] == [1024, 2048]
    assert [round(e.value, 5) for e in acc] == [round(r["val/acc"], 5) for r in val]
    assert "val/acc_class/9" in ea.Tags()["scalars"]
    grids = {t: ea.Images(t)[-1] for t in ("samples/first", "samples/last")}
    assert grids["samples/last"].step == 2048 and grids["samples/first"].width == 8 * 30
    # plots: two labelled grids side by side; accuracy with its band; loss and per-class curves
    for name in ("samples.png", "val_accuracy.png", "curves.png"):
        with Image.open(run_dir / name) as im:
            im.load()
            w, h = im.size
            assert w > h and h >= 400, (name, im.size)


def test_plots_name_the_classes_the_family_names(tmp_path):
    from otfgen.trainer import plots
    from otfgen.trainer.train import class_names

    names = class_names("fashion2d", 10)
    assert names[0] == "T-shirt/top" and names[9] == "ankle boot"
    assert class_names("mnist2d", 10) is None  # digits are their own names
    history = [{"train/samples": 128 * i, "train/loss": 1.0, "val/loss": 1.0, "val/acc_class": [0.5] * 10}
               for i in (1, 2)]
    import matplotlib.pyplot as plt

    shown = []
    real_savefig = plt.Figure.savefig

    def savefig(fig, *a, **k):
        shown.extend(t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts())
        return real_savefig(fig, *a, **k)

    plt.Figure.savefig = savefig
    try:
        plots.curves(history, tmp_path / "curves.png", class_names=names)
    finally:
        plt.Figure.savefig = real_savefig
    assert "ankle boot" in shown


def test_the_run_says_once_how_long_it_expects_to_take(monkeypatch, caplog):
    from otfgen.trainer import progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    p = progress.Progress(20_000, bar=False, every_s=1e9)
    with caplog.at_level("INFO", logger="otfgen.train"):
        for done in range(128, 20_000, 128):  # 250 samples/s
            clock[0] += 128 / 250
            p.update(done, "", "trainer: %d", done)
    lines = [r.getMessage() for r in caplog.records if "expects" in r.getMessage() or "takes about" in r.getMessage()]
    # measured after 5% of the run (1,024 samples at 4 s is under 5 s: 1,280 at 5.1 s)
    assert lines == ["trainer: at 250 samples/s this run takes about 1m20s in all, 1m15s from now "
                     f"(done about {lines[0][-6:-1]})"], lines


def test_console_lines_clear_the_terminal_line_first(monkeypatch):
    """Every process of a run shares the terminal, where the trainer's bar has no newline yet."""
    from otfgen.configs import cli

    for cols, prefix in ((120, "\r\x1b[K"), (0, "")):  # a 0-column terminal draws no bar
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
        with os.fdopen(slave, "w") as tty:
            monkeypatch.setattr("sys.stderr", tty)
            cli.setup_logging()
            logging.getLogger("otfgen.test").info("a line")
            tty.flush()
            out = os.read(master, 4096).decode()
        os.close(master)
        assert re.match(re.escape(prefix) + r"\d{4}-", out) and out.rstrip().endswith("a line"), (cols, out)
    cli.setup_logging()


def _visible_lines(out: str) -> list[str]:
    """What a terminal shows of each line: the text after its last carriage return."""
    return [ln.rsplit("\r", 1)[-1].replace("\x1b[K", "") for ln in out.replace("\r\n", "\n").split("\n")]


def _on_a_terminal(argv, env, timeout=240, cols=120):
    """Run with stdout and stderr on a pseudo-terminal (``cols`` columns); everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out = bytearray()

    def read():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not chunk:
                return
            out.extend(chunk)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    code = p.wait(timeout=timeout)
    t.join(10)
    os.close(master)
    return code, out.decode(errors="replace")


@pytest.mark.slow
def test_progress_bar_with_an_eta_on_a_terminal(tmp_path, env):
    run_dir = tmp_path / "run"
    code, out = _on_a_terminal(otfgen_cmd(f"hydra.run.dir={run_dir}", "budget.samples=1024",
                                          "trainer.val_every=1024", *SMALL), env)
    assert code == 0, out[-3000:]
    # tqdm's bar: "train:  50%|█████     | 512/1.02k [00:03<00:03, 150sample/s, loss 2.250, data wait 0%]"
    assert re.search(r"train: +\d+%\|.*\| *[\d.]+k?/1\.02k \[\d\d:\d\d<\d\d:\d\d", out), out[-2000:]
    assert "loss " in out and "data wait" in out
    # the periodic lines go to the log file only while the bar is shown; other lines still reach the terminal
    assert not re.search(r"trainer: +\d+ / 1024 samples", out)
    assert re.search(r"trainer: +\d+ / 1024 samples .* eta", (run_dir / "trainer.log").read_text())
    assert "val acc" in out and "otfgen: done" in out
    # the finished bar shows once, and no process's line is written onto the bar's line
    shown = _visible_lines(out)
    assert sum("train: 100%" in ln for ln in shown) == 1, shown[-15:]
    assert not [ln for ln in shown if "train:" in ln and " otfgen" in ln], shown[-15:]


@pytest.mark.slow
def test_a_terminal_without_columns_gets_plain_lines_and_a_short_run_a_curve(tmp_path, env):
    """``script`` and some CI front-ends report 0 columns: tqdm draws nothing there. Without
    trainer.val_every, 1,024 samples are validated 8 times."""
    run_dir = tmp_path / "run"
    code, out = _on_a_terminal(otfgen_cmd(f"hydra.run.dir={run_dir}", "budget.samples=1024", *SMALL), env, cols=0)
    assert code == 0, out[-3000:]
    assert re.search(r"trainer: +\d+ / 1024 samples .* eta", out) and "train: " not in out, out[-2000:]
    val = [r for r in map(json.loads, open(run_dir / "metrics.jsonl")) if "val/acc" in r]
    assert len(val) >= 8 and val[-1]["train/samples"] == 1024, [r["train/samples"] for r in val]
