"""Channels-last weights during traces: the same ONNX bytes, the same counts, the model restored."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

from casprof.backends.onnx_export import export_onnx
from casprof.complexity import count_macs
from casprof.probes import BASELINE, build_probe, measurement_blocks
from casprof.trace_layout import channels_last_weights, convertible, trace_input
from tests.conftest import MINI

SHAPE = (1, 3, 64, 128)
#: one probe of every block (every cell type, and the edge-model variants)
PROBES = [BASELINE] + [members[len(members) // 2] for _, members in measurement_blocks(MINI)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _no_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trace as before this module existed: weights and input left contiguous."""
    from contextlib import nullcontext

    from casprof import complexity
    from casprof.backends import onnx_export

    for module in (complexity, onnx_export):
        monkeypatch.setattr(module, "channels_last_weights", lambda model: nullcontext(False))


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.key)
def test_exports_and_counts_do_not_depend_on_the_layout(probe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_probe(MINI, probe, 0)
    fast = export_onnx(model, SHAPE, tmp_path / "nhwc.onnx")
    fast_count = count_macs(model, SHAPE)
    assert all(p.is_contiguous() for p in model.parameters())  # restored
    _no_conversion(monkeypatch)
    plain = export_onnx(model, SHAPE, tmp_path / "nchw.onnx")
    assert _sha(fast.path) == _sha(plain.path)
    assert count_macs(model, SHAPE) == fast_count


def test_weights_are_converted_inside_and_restored_after() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    weight = model[0].weight
    before = weight.detach().clone()
    with channels_last_weights(model) as converted:
        assert converted
        assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
        x = trace_input((1, 3, 8, 8), converted)
        assert x.is_contiguous(memory_format=torch.channels_last) and not x.any()
    assert model[0].weight is weight and weight.is_contiguous() and torch.equal(weight, before)


def test_models_it_cannot_restore_exactly_are_left_alone() -> None:
    model = nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    assert not convertible(model)
    with channels_last_weights(model) as converted:
        assert not converted
    assert model.weight.is_contiguous(memory_format=torch.channels_last)  # as the caller had it
    with channels_last_weights(nn.Linear(3, 3)) as converted:  # nothing 4-D: nothing to do
        assert not converted
    assert trace_input((2, 3), True).shape == (2, 3)


def test_the_model_is_restored_when_the_trace_fails() -> None:
    model = nn.Conv2d(3, 8, 3)
    with pytest.raises(RuntimeError, match="boom"), channels_last_weights(model):
        raise RuntimeError("boom")
    assert model.weight.is_contiguous()
