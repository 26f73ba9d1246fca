"""The command line: help text, the demo, and one-line errors for bad input."""
import subprocess
import sys

import pytest
import torch

from pysedd.cli import build_parser, main
from pysedd.config import SEDDConfig
from pysedd.graph import Absorbing
from pysedd.model import SEDD
from pysedd.noise import LogLinear
from pysedd.sampling.pc import pc_sample


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--help"])
    assert e.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_user_error_is_one_line(capsys):
    assert main(["demo", "--preset", "huge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pysedd: error: unknown model preset 'huge'; choose one of tiny, mini, small, medium, large-1.45b"]


def test_pc_sample_removes_every_mask_and_is_reproducible():
    torch.manual_seed(0)
    cfg = SEDDConfig.preset("tiny", tokens=20, hidden_size=32, cond_dim=16, n_blocks=1, n_heads=4)
    model = SEDD(cfg)
    graph, noise = Absorbing(20), LogLinear()
    a = pc_sample(model, graph, noise, 3, 10, 8, generator=torch.Generator().manual_seed(5)).samples
    b = pc_sample(model, graph, noise, 3, 10, 8, generator=torch.Generator().manual_seed(5)).samples
    assert torch.equal(a, b) and a.shape == (3, 10) and (a < 20).all()


def test_module_entry_point_runs_demo(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pysedd", "demo", "--steps", "2", "--length", "8", "--batch-size", "1", "--save", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "saved and reloaded" in out.stdout and (tmp_path / "m" / "model.safetensors").is_file()
