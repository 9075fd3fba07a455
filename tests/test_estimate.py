"""The roofline estimator: hand-computed kernels, spec-sheet figures, an estimated profile end to end."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from rich.console import Console
from typer.testing import CliRunner

from casprof.cli.app import app
from casprof.devices import get_device
from casprof.display import profile_table
from casprof.errors import UserInputError
from casprof.estimate import Kernel, Roofline, network_kernels
from casprof.profile import Method, Profile

runner = CliRunner()

UNIT = Roofline(peak_flops=1e9, bandwidth=1e9, launch_overhead_s=1e-6, bytes_per_element=4, source="test")


def test_convolution_kernel_and_its_roofline_time() -> None:
    (k,) = network_kernels(nn.Conv2d(8, 16, 3, padding=1, bias=False), (1, 8, 10, 20))
    # 2 FLOPs per MAC: 2 * (16 * 10 * 20 outputs) * (8 * 3 * 3 taps)
    assert k == Kernel("convolution", 2.0 * 3200 * 72, 1600 + 16 * 8 * 9 + 3200)
    # compute-bound: 460.8 us of arithmetic beats 23.8 us of memory traffic
    assert UNIT.seconds(k) == pytest.approx(460.8e-6 + 1e-6)


def test_elementwise_kernel_is_memory_bound_and_views_cost_nothing() -> None:
    class Net(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x.view(1, 8, 200)[:, :, :100])

    kernels = network_kernels(Net(), (1, 8, 10, 20))
    assert [k.op for k in kernels] == ["relu"]  # the view and the slice launch nothing
    (k,) = kernels
    assert (k.flops, k.elements) == (800.0, 1600.0)
    assert UNIT.seconds(k) == pytest.approx(1600 * 4 / 1e9 + 1e-6)


def test_an_operator_without_a_rule_is_an_error_not_zero() -> None:
    with pytest.raises(RuntimeError, match="aten::sigmoid"):
        network_kernels(nn.Sigmoid(), (1, 2, 4, 4))


def test_spec_sheet_figures() -> None:
    r = Roofline.from_device(get_device("titanxp"))
    assert r.peak_flops == pytest.approx(12.15e12) and r.bandwidth == pytest.approx(547.7e9)
    assert r.launch_overhead_s == pytest.approx(5e-6) and r.bytes_per_element == 4
    assert Roofline.from_device(get_device("titanxp"), "fp16").bytes_per_element == 2
    with pytest.raises(UserInputError, match="no spec-sheet"):
        Roofline.from_device(get_device("cuda"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "cuda"], "no spec-sheet fp32 peak rate"),
        (["--device", "i7-8700", "--precision", "fp16"], "no spec-sheet fp16"),
        (["--device", "nosuchgpu"], "Unknown device"),
    ],
)
def test_estimate_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "p.json"
    result = runner.invoke(app, ["measure", *args, "--estimate", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def estimated_mini(tmp_path_factory: pytest.TempPathFactory, network_files: dict[str, Path]) -> Path:
    """``casprof measure --device gtx1070 --estimate`` of the MINI network at 32x64, as a real subprocess."""
    out = tmp_path_factory.mktemp("estimate") / "gtx1070-mini.json"
    exe = Path(sys.executable).with_name("casprof")
    cmd = [str(exe), "measure", "--device", "gtx1070", "--estimate", "--resolution", "32x64",
           "--network", str(network_files["mini"]), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "ESTIMATE" in proc.stderr + proc.stdout
    return out


def test_estimated_profile_is_labelled_and_consistent(estimated_mini: Path) -> None:
    p = Profile.load(estimated_mini)
    assert p.method is Method.ESTIMATED and p.device == "gtx1070"
    assert p.edge_model is not None and set(p.edge_model.cells) == {"normal", "reduce", "ms"}
    base = p.baseline["latency_ms"]
    assert base.source == "estimated" and base.measurement is None and base.value > 0
    # a 3x3 convolution on every edge costs more than a 3x3 max pooling, in arithmetic and in the roofline
    for metric in ("latency_ms", "macs"):
        assert p.cost("normal", "conv_3x3_x2", metric).value > p.cost("normal", "conv_3x3", metric).value > p.cost("normal", "max_pool_3x3", metric).value
    raw = json.loads(estimated_mini.read_text())
    assert raw["backend"]["details"]["roofline"]["peak_tflops"] == pytest.approx(6.46)
    show = runner.invoke(app, ["show", str(estimated_mini)])
    assert show.exit_code == 0 and "ESTIMATED PROFILE" in show.output
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(profile_table(p))
    rows = [line for line in console.export_text().splitlines() if any(f" {op} " in line for op in ("conv_3x3_x2", "spp_8x8"))]
    assert len(rows) == 3 and all(" EST " in line for line in rows)  # every latency is marked
    check = runner.invoke(app, ["check", str(estimated_mini)])
    assert check.exit_code == 0 and "ESTIMATE" in check.output
