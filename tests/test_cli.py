"""The command line: instant help listing every command, the paper's option syntax, clean user errors."""

import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pandas as pd
from typer.testing import CliRunner

from rayspine.cli import app

COMMANDS = ["synth", "train-seg", "measure", "train-ae", "run", "cv", "interpret", "report", "demo"]


def test_help_is_fast_and_lists_every_command():
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "rayspine.cli", "--help"], capture_output=True, text=True, check=True)
    assert time.perf_counter() - started < 2.0
    for command in COMMANDS:
        assert command in out.stdout
    # --help must not import the heavy stack
    probe = "import sys, rayspine.cli; print(any(m in sys.modules for m in ('torch', 'ray', 'monai')))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


def test_bottleneck_sizes_written_as_in_the_paper(tmp_path):
    with mock.patch("rayspine.autoencode.sweep.run_sweep", return_value=pd.DataFrame({"bottleneck": [4]})) as sweep, mock.patch("rayspine.runtime.init_ray"):
        result = CliRunner().invoke(app, ["train-ae", str(tmp_path), "-o", str(tmp_path / "ae"), "--bottleneck", "64", "8", "4", "3"])
    assert result.exit_code == 0, result.output
    crops, _, cfg = sweep.call_args[0]
    assert crops == [Path(tmp_path)] and cfg.ae.bottlenecks == (64, 8, 4, 3)


def test_user_errors_exit_2_with_one_line(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    out = subprocess.run([sys.executable, "-m", "rayspine.cli", "synth", str(tmp_path), "--patients", "1"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "not empty" in out.stderr
