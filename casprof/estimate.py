"""Estimated profiles for absent devices: a roofline per kernel from spec-sheet figures.

Every probe network runs once on PyTorch's ``meta`` device (shapes only, no arithmetic) under a
dispatch mode that records each ``aten`` operator it calls: its floating-point operations and the
bytes it moves (inputs, weights and outputs, each at the precision's width). One operator is taken
as one kernel, costing

    t = max(flops / peak_flops, bytes / memory_bandwidth) + launch_overhead

(the roofline: a kernel is bound by arithmetic or by memory traffic, whichever is slower, plus a
fixed per-kernel dispatch cost). The network's estimate is the sum over its kernels, and
c_o = est(probe) - est(baseline), as in a measured profile. ``params`` and ``macs`` are the same
exact counts a measured profile has.

What the estimate ignores, and why it is only an estimate: caches (a CPU's L2/L3 hold many
feature maps of this network, so real kernels often beat DRAM bandwidth), kernel fusion by the
backend (conv + BN + ReLU run as one kernel in ONNX Runtime and TensorRT), algorithm choice
(Winograd, implicit GEMM) and occupancy (a small kernel does not reach the peak rate). It is
meant to rank operations, not to replace a measurement; a profile made this way says
``method: estimated`` and every tool labels it so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from math import prod
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from casprof import __version__
from casprof.backends.base import Precision
from casprof.config import NetworkConfig
from casprof.devices import DeviceSpec
from casprof.errors import UserInputError
from casprof.measure import Progress, ProgressCallback, exact_counts
from casprof.ops import CELL_TYPES, candidate_ops
from casprof.edge_model import CellEdgeModel, EdgeModel
from casprof.probes import BASELINE, Probe, Variant, build_probe, profile_probes
from casprof.profile import BackendRecord, CostValue, Method, Metric, Profile

#: Operators that launch no kernel (views, allocation, metadata): no time at all.
NO_KERNEL_OPS: frozenset[str] = frozenset({
    "empty", "empty_like", "slice", "select", "view", "_unsafe_view", "reshape", "expand", "as_strided",
    "t", "transpose", "permute", "unsqueeze", "squeeze", "detach", "alias", "lift_fresh", "_to_copy_noop",
})

#: Element-wise operators: one operation per output element.
ELEMENTWISE_OPS: frozenset[str] = frozenset({"add", "sub", "mul", "div", "relu", "neg", "clamp", "hardtanh"})

#: Pure data movement: no arithmetic, only bytes.
COPY_OPS: frozenset[str] = frozenset({"cat", "constant_pad_nd", "copy", "clone", "_to_copy", "fill"})


@dataclass(frozen=True)
class Kernel:
    """One operator call of a network: its name, arithmetic and memory traffic (elements)."""

    op: str
    flops: float
    elements: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Roofline:
    """The figures the estimate uses, with where they come from.

    Args:
        peak_flops: floating-point operations per second (an FMA counts 2).
        bandwidth: memory bytes per second.
        launch_overhead_s: fixed time added to every kernel.
        bytes_per_element: 4 for fp32, 2 for fp16.
        source: where the figures come from (spec sheet, calibration).
    """

    peak_flops: float
    bandwidth: float
    launch_overhead_s: float
    bytes_per_element: int
    source: str

    def __post_init__(self) -> None:
        if self.peak_flops <= 0 or self.bandwidth <= 0 or self.launch_overhead_s < 0 or self.bytes_per_element < 1:
            raise UserInputError("A roofline needs a positive peak rate and bandwidth and a non-negative overhead.")

    def seconds(self, kernel: Kernel) -> float:
        """``max(compute, memory) + overhead`` of one kernel."""
        compute = kernel.flops / self.peak_flops
        memory = kernel.elements * self.bytes_per_element / self.bandwidth
        return max(compute, memory) + self.launch_overhead_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_tflops": self.peak_flops / 1e12,
            "bandwidth_gbs": self.bandwidth / 1e9,
            "launch_overhead_us": self.launch_overhead_s * 1e6,
            "bytes_per_element": self.bytes_per_element,
            "source": self.source,
        }

    @classmethod
    def from_device(cls, spec: DeviceSpec, precision: Precision | str = Precision.FP32) -> Roofline:
        """The registry's spec-sheet figures of ``spec`` (UserInputError if it has none)."""
        precision = Precision(precision)
        peak = spec.peak_fp16_tflops if precision is Precision.FP16 else spec.peak_fp32_tflops
        if peak is None or spec.memory_bandwidth_gbs is None:
            raise UserInputError(
                f"Device '{spec.name}' has no spec-sheet {precision.value} peak rate and memory bandwidth to estimate from"
                + ("; on this CPU use --device cpu --estimate, which calibrates them." if spec.kind.value == "cpu" else ".")
            )
        return cls(
            peak_flops=peak * 1e12,
            bandwidth=spec.memory_bandwidth_gbs * 1e9,
            launch_overhead_s=spec.launch_overhead_us * 1e-6,
            bytes_per_element=2 if precision is Precision.FP16 else 4,
            source=f"device registry entry '{spec.name}': {spec.notes} Launch overhead {spec.launch_overhead_us:g} us "
            "per kernel is the registry's assumption (see casprof/devices.py), not a spec figure.",
        )


def _numel(x: Any) -> int:
    return x.numel() if isinstance(x, torch.Tensor) else 0


def _tensors(values: Sequence[Any]) -> Iterator[torch.Tensor]:
    for v in values:
        if isinstance(v, torch.Tensor):
            yield v
        elif isinstance(v, (list, tuple)):
            yield from _tensors(v)


def kernel_of(op: str, args: Sequence[Any], out: Any) -> Kernel | None:
    """The kernel of one ``aten`` call (``None`` for views and allocations).

    Raises:
        RuntimeError: an operator this estimator has no rule for (never counted as zero silently).
    """
    if op in NO_KERNEL_OPS:
        return None
    outputs = list(_tensors([out]))
    first = outputs[0]
    moved = float(sum(t.numel() for t in _tensors(args)) + first.numel())
    n_out = float(first.numel())
    if op == "convolution":
        weight, bias, groups = args[1], args[2], int(args[8])
        c_in_per_group = args[0].shape[1] // groups
        flops = 2.0 * n_out * c_in_per_group * prod(weight.shape[2:]) + (n_out if bias is not None else 0.0)
        return Kernel(op, flops, moved)
    if op in ("native_batch_norm", "_native_batch_norm_legit_no_training"):
        return Kernel(op, 2.0 * n_out, float(_numel(args[0]) + n_out + 4 * args[0].shape[1]))
    if op in ELEMENTWISE_OPS:
        return Kernel(op, n_out, moved)
    if op in ("avg_pool2d", "max_pool2d_with_indices", "max_pool2d"):
        kernel = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        taps = prod(kernel) if len(kernel) == 2 else kernel[0] ** 2
        return Kernel(op, n_out * taps, float(_numel(args[0]) + n_out))
    if op in ("upsample_bilinear2d", "_upsample_bilinear2d_aa"):
        return Kernel(op, 4.0 * n_out, float(_numel(args[0]) + n_out))
    if op in ("adaptive_avg_pool2d", "_adaptive_avg_pool2d", "mean"):
        return Kernel(op, float(_numel(args[0])), float(_numel(args[0]) + n_out))
    if op in COPY_OPS:
        return Kernel(op, 0.0, moved)
    raise RuntimeError(f"estimate: no roofline rule for aten::{op}; add one in casprof.estimate")


class _KernelRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.kernels: list[Kernel] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        kernel = kernel_of(func.overloadpacket.__name__, args, out)
        if kernel is not None:
            self.kernels.append(kernel)
        return out


def network_kernels(model: nn.Module, input_shape: tuple[int, int, int, int]) -> list[Kernel]:
    """Every kernel of one forward pass of ``model`` (evaluation mode, on the meta device).

    The model is moved to the meta device, so pass a model built for this purpose.
    """
    model = model.eval().to("meta")
    recorder = _KernelRecorder()
    with torch.no_grad(), recorder:
        model(torch.empty(input_shape, device="meta"))
    return recorder.kernels


def estimate_seconds(model: nn.Module, input_shape: tuple[int, int, int, int], roofline: Roofline) -> float:
    """Roofline estimate of one forward pass, in seconds."""
    return sum(roofline.seconds(k) for k in network_kernels(model, input_shape))


def estimate_probe_ms(config: NetworkConfig, probe: Probe, resolution: tuple[int, int], roofline: Roofline) -> float:
    """Roofline estimate of a probe network's latency, in milliseconds."""
    shape = (1, config.in_channels, *resolution)
    return 1e3 * estimate_seconds(build_probe(config, probe), shape, roofline)


# --- calibration of the present CPU --------------------------------------------------------------


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _best_rate(work: float, fn: Callable[[], Any], seconds: float) -> float:
    fn()  # warm-up
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        best = max(best, work / (time.perf_counter() - t0))
    return best


def calibrate_cpu(threads: int, seconds: float = 1.0, launch_overhead_us: float = 1.0) -> Roofline:
    """Measure this CPU's attainable fp32 rate (a 1024x1024 matrix product) and copy bandwidth.

    The best of repeated runs over ``seconds`` each: an attainable peak, not a spec figure.
    Bandwidth is read + write bytes of copying a 256 MiB tensor (beyond any cache).
    """
    n = 1024
    with _threads(threads):
        a, b = torch.randn(n, n), torch.randn(n, n)
        flops = _best_rate(2.0 * n**3, lambda: torch.mm(a, b), seconds)
        src = torch.empty(64 * 2**20)
        dst = torch.empty_like(src)
        bandwidth = _best_rate(2.0 * 4 * src.numel(), lambda: dst.copy_(src), seconds)
    return Roofline(
        peak_flops=flops,
        bandwidth=bandwidth,
        launch_overhead_s=launch_overhead_us * 1e-6,
        bytes_per_element=4,
        source=(f"MEASURED calibration on this CPU with {threads} thread(s): best fp32 rate of a {n}x{n} torch.mm "
                f"({flops / 1e9:.1f} GFLOP/s) and best copy bandwidth of a 256 MiB tensor, read + write "
                f"({bandwidth / 1e9:.1f} GB/s); launch overhead {launch_overhead_us:g} us per operator (the "
                "device registry's assumption for CPUs)."),
    )


# --- the estimated profile ------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimateRequest:
    """What to estimate: which registry device, at which precision and resolution, with which figures."""

    device: DeviceSpec
    roofline: Roofline
    precision: Precision = Precision.FP32
    resolution: tuple[int, int] = (768, 1536)


def estimate_profile(config: NetworkConfig, request: EstimateRequest, *,
                     progress: ProgressCallback = lambda p: None) -> Profile:
    """A profile with ``method: estimated``: roofline latencies, exact parameters and MACs."""
    config.check_resolution(*request.resolution)
    probes = profile_probes(config)
    latency: dict[str, float] = {}
    exact: dict[str, dict[str, float]] = {}
    for i, probe in enumerate(probes):
        progress(Progress("estimating", i, len(probes), probe.key))
        latency[probe.key] = estimate_probe_ms(config, probe, request.resolution, request.roofline)
        exact[probe.key] = exact_counts(config, probe, tuple(request.resolution))
    progress(Progress("estimating", len(probes), len(probes)))
    base = exact[BASELINE.key]
    baseline = {
        Metric.LATENCY_MS.value: CostValue(latency[BASELINE.key], source="estimated"),
        Metric.PARAMS.value: CostValue(base[Metric.PARAMS.value]),
        Metric.MACS.value: CostValue(base[Metric.MACS.value]),
    }

    def probe_costs(probe: Probe) -> dict[str, CostValue]:
        return {
            Metric.LATENCY_MS.value: CostValue(latency[probe.key] - latency[BASELINE.key], source="estimated"),
            Metric.PARAMS.value: CostValue(exact[probe.key][Metric.PARAMS.value] - base[Metric.PARAMS.value]),
            Metric.MACS.value: CostValue(exact[probe.key][Metric.MACS.value] - base[Metric.MACS.value]),
        }

    costs = {
        t: {op: ({m.value: CostValue(0.0, source="definition") for m in Metric} if op == "identity" else probe_costs(Probe(t, op)))
            for op in candidate_ops(t)}
        for t in CELL_TYPES
    }
    cells = {
        t: CellEdgeModel.from_probe_costs(t, probes, probe_costs)
        for t in CELL_TYPES
        if any(p.cell_type == t and p.variant is not Variant.FULL for p in probes)
    }
    spec = request.device
    return Profile(
        device=spec.name,
        hardware={"estimated_for": spec.to_dict(), "note": "not measured: no hardware was present or used"},
        backend=BackendRecord(
            name="roofline-estimate",
            version=__version__,
            precision=Precision(request.precision).value,
            device=spec.kind.value,
            details={"roofline": request.roofline.to_dict()},
        ),
        method=Method.ESTIMATED,
        network=config,
        input_size=tuple(request.resolution),
        baseline=baseline,
        costs=costs,
        settings={
            "method": "roofline per aten operator on the meta device: max(flops / peak, bytes / bandwidth) "
                      "+ launch overhead, summed over the network; c_o = est(probe) - est(baseline)",
            "resolution": list(request.resolution),
            "precision": Precision(request.precision).value,
            "roofline": request.roofline.to_dict(),
            "batch": 1,
        },
        warnings=("ESTIMATE from spec-sheet or calibrated figures, not a measurement; caches, kernel fusion and "
                  "algorithm choice are ignored.",),
        edge_model=EdgeModel(cells),
    )
