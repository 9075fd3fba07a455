"""A stand-in ``tensorrt`` module for the builder calls, for machines without TensorRT or a GPU.

TensorRT cannot run here, so this records what :func:`casprof.backends.tensorrt_runner.build_serialized_engine`
asks of the builder and answers as TensorRT 10.12+/11.x does where it matters: the parser reads
the real ONNX file's inputs (a ``dim_param`` becomes -1), a network with a dynamic input and no
optimization profile fails to build with TensorRT's error, a timing cache from elsewhere is
logged as an error and then ignored, and precision flags are never expected.
Install it with ``monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt())``.
"""

from __future__ import annotations

import enum
import types
from dataclasses import dataclass, field
from typing import Any

import onnx

__version__ = "11.0.0-fake"
CACHE_MAGIC = b"FAKE-TIMING-CACHE:"
PLAN = b"FAKE-PLAN"


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass

    def log(self, severity: Any, msg: str) -> None:  # pragma: no cover - overridden
        pass


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 5


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class BuilderFlag(enum.IntEnum):
    TF32 = 7


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]


@dataclass
class Network:
    flags: int
    inputs: list[Tensor] = field(default_factory=list)

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> Tensor:
        return self.inputs[i]


@dataclass
class OptimizationProfile:
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - TensorRT's names
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


@dataclass
class TimingCache:
    data: bytes

    def serialize(self) -> bytes:
        return self.data


class BuilderConfig:
    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.pool_limits: dict[int, int] = {}
        self.flags_set: list[Any] = []
        self.profiles: list[OptimizationProfile] = []
        self.timing_cache: TimingCache | None = None

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self.pool_limits[int(pool)] = int(size)

    def set_flag(self, flag: Any) -> None:
        self.flags_set.append(flag)

    def get_flag(self, flag: Any) -> bool:
        return flag == BuilderFlag.TF32

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> TimingCache:
        data = bytes(data)
        if data and not data.startswith(CACHE_MAGIC):
            self.logger.log(
                Severity.ERROR,
                "IBuilderConfig::createTimingCache: Error Code 2: Internal Error (Timing cache version mismatch.) "
                "The timing cache will not be used!",
            )
            return TimingCache(CACHE_MAGIC)
        return TimingCache(data or CACHE_MAGIC)

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> TimingCache:
        assert self.timing_cache is not None
        return self.timing_cache


class Builder:
    """Keeps itself in the module's ``state["builder"]`` (with the network and config it made) so a
    test can look at them afterwards."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.network: Network | None = None
        self.config: BuilderConfig | None = None
        _STATE["builder"] = self

    def create_network(self, flags: int) -> Network:
        self.network = Network(int(flags))
        return self.network

    def create_builder_config(self) -> BuilderConfig:
        self.config = BuilderConfig(self.logger)
        return self.config

    def create_optimization_profile(self) -> OptimizationProfile:
        return OptimizationProfile()

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes | None:
        for tensor in network.inputs:
            if -1 in tensor.shape and not any(tensor.name in p.shapes for p in config.profiles):
                self.logger.log(
                    Severity.ERROR,
                    "IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (Network has dynamic or shape "
                    "inputs, but no optimization profile has been defined.)",
                )
                return None
        if _STATE.get("fail_build"):
            self.logger.log(Severity.ERROR, "Error Code 10: Internal Error (Could not find any implementation for node Resize.)")
            return None
        config.timing_cache = TimingCache(config.get_timing_cache().data + b"+entries")
        return PLAN


class OnnxParser:
    def __init__(self, network: Network, logger: Any) -> None:
        self.network = network
        self.errors: list[str] = []

    def parse_from_file(self, path: str) -> bool:
        try:
            model = onnx.load(path, load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - TensorRT reports, it does not raise
            self.errors.append(f"Failed to parse ONNX model from file: {path} ({type(exc).__name__})")
            return False
        known = {t.name for t in model.graph.initializer}
        for value in model.graph.input:
            if value.name in known:
                continue
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
            self.network.inputs.append(Tensor(value.name, dims))
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]


_STATE: dict[str, Any] = {}


def make_fake_tensorrt(*, fail_build: bool = False) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module; ``module.state["builder"]`` is the last builder made."""
    _STATE.clear()
    _STATE["fail_build"] = fail_build
    module = types.ModuleType("tensorrt")
    for name in (
        "Severity", "ILogger", "NetworkDefinitionCreationFlag", "MemoryPoolType", "BuilderFlag", "Builder", "OnnxParser",
    ):
        setattr(module, name, globals()[name])
    module.__version__ = __version__
    module.state = _STATE
    return module
