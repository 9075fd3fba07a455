"""``cas deploy export``: one checked, parity-verified ONNX file per genotype (and a TensorRT engine).

The ONNX file is exported under a temporary name beside its target, checked with
``onnx.checker`` (one self-contained file, no external-data sidecar), and run in ONNX Runtime
on the CPU on a seeded random input; its logits are compared with PyTorch's
(:mod:`deploy.parity`, fp32 thresholds). Only when parity holds is the file renamed into place,
with ``<onnx>.json`` metadata beside it: genotype hash, network fingerprint, resolution, exporter,
opset, sha256, parity figures and the weights (file and sha256, or "random init"). A failed
export or parity check exits 1 and leaves nothing behind.

``--dynamic`` exports dynamic height and width (``torch.export.Dim``, multiples of the network
stride) with the dynamo exporter and checks parity at two resolutions; when the exporter cannot
keep the sizes symbolic for this network, it says so (exit 2) instead of writing a static file.

``--trt fp32|fp16|int8`` then builds a strongly typed TensorRT engine
(:mod:`casprof.backends.tensorrt_runner`): fp32 from the verified ONNX file, fp16 from a
half-precision export, int8 from a Q/DQ ONNX file (:mod:`deploy.quantize`, made on the CPU even
where TensorRT is absent). Where TensorRT or a GPU is missing, this step exits 2 with one
sentence after the ONNX part has been written.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from casprof import __version__
from casprof._io import (atomic_write_json, ensure_parent_exists, file_sha256, give_usual_permissions, install, json_text,
                         pending_file, read_json_file, synced_writer)
from casprof.backends.base import Precision, RunnerSpec
from casprof.backends.onnx_export import (
    EXPORTERS,
    INPUT_NAME,
    OUTPUT_NAME,
    check_exporter,
    export_onnx,
    onnx_opset,
)
from casprof.config import DEFAULT_RESOLUTION, MAX_SIDE, parse_resolution
from casprof.errors import BackendUnavailableError, MeasurementError, UserInputError, WriteError
from deploy.build import BuiltNetwork, build_network, load_genotype
from deploy.parity import FP32, INT8, ParityResult, compare_outputs, thresholds_for
from deploy.quantize import QuantizeInfo, quantize_qdq

DEFAULT_EXPORTER = "dynamo"
METADATA_SCHEMA_VERSION = 1
#: Seed of the random input of every parity check.
PARITY_SEED = 0

Progress = Callable[[str], None]


class TrtPrecision(str, enum.Enum):
    """Precision of a TensorRT engine (int8 through a Q/DQ ONNX file)."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_genotype` wrote."""

    onnx_path: Path
    metadata_path: Path
    metadata: dict[str, Any]
    parity: ParityResult
    built: BuiltNetwork
    input_shape: tuple[int, int, int, int]
    exporter: str
    dynamic: bool
    int8: QuantizeInfo | None = None


# --------------------------------------------------------------------------------------------
# Paths and small helpers
# --------------------------------------------------------------------------------------------


def metadata_path_for(path: Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (the metadata beside an exported file)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _install_pair(onnx_tmp: Path, target: Path, meta_tmp: Path, meta_path: Path) -> None:
    """Rename the verified ONNX file into place, then its metadata.

    A kill between the two renames leaves the new ONNX file beside the old metadata, whose
    sha256 no longer matches: ``cas deploy bench --onnx`` refuses that pair (:func:`check_export_sha`).
    """
    install(onnx_tmp, target)
    try:
        install(meta_tmp, meta_path, outcome="the export was removed")
    except WriteError:
        with contextlib.suppress(OSError):
            target.unlink()
        raise


def default_onnx_path(genotype_path: Path, resolution: tuple[int, int], dynamic: bool) -> Path:
    """``runs/x/genotype.json`` -> ``runs/x/genotype-768x1536.onnx`` (``-dynamic`` for dynamic sizes)."""
    genotype_path = Path(genotype_path)
    tag = "dynamic" if dynamic else f"{resolution[0]}x{resolution[1]}"
    return genotype_path.with_name(f"{genotype_path.stem}-{tag}.onnx")


def int8_path_for(onnx_path: Path) -> Path:
    """``model.onnx`` -> ``model.int8-qdq.onnx``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}.int8-qdq.onnx")


def default_engine_path(onnx_path: Path, precision: TrtPrecision) -> Path:
    """``model.onnx`` -> ``model.fp16.engine``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}.{TrtPrecision(precision).value}.engine")


def default_threads() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def seeded_input(shape: Sequence[int], seed: int = PARITY_SEED) -> np.ndarray:
    """The same standard-normal float32 input as ``Runner.fixed_input`` for ``seed``."""
    return np.random.default_rng(seed).standard_normal(tuple(int(s) for s in shape), dtype=np.float32)


def torch_reference(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """PyTorch's fp32 CPU logits for ``x`` (the reference of every parity check)."""
    with torch.inference_mode():
        return model(torch.from_numpy(x)).float().numpy()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _runtime_error_summary(exc: BaseException) -> str:
    """ONNX Runtime's error in a few words: the failing node type and the reason, without source paths."""
    text = _first_line(exc)
    if "Status Message:" not in text:
        return text
    node = re.search(r"running (\S+) node", text)
    reason = text.split("Status Message:", 1)[1]
    if "was false." in reason:
        reason = reason.split("was false.", 1)[1]
    reason = reason.strip()
    return f"ONNX Runtime fails in a {node.group(1)} node: {reason}" if node else reason


def onnx_input_shape(path: Path) -> list[int | str]:
    """The input's dimensions of an ONNX file: ints, or names for dynamic dimensions."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return [int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


# --------------------------------------------------------------------------------------------
# The ONNX export
# --------------------------------------------------------------------------------------------


def _export_dynamic(model: nn.Module, shape: tuple[int, int, int, int], path: Path, stride: int) -> float:
    """Export with symbolic H and W (multiples of ``stride``) via the dynamo exporter; return seconds."""
    # Private helpers of casprof's exporter: the same silencing and the same file checks.
    from casprof.backends.onnx_export import check_onnx_file, quiet_exporter

    h = torch.export.Dim("h_blocks", min=2, max=MAX_SIDE // stride)
    w = torch.export.Dim("w_blocks", min=2, max=MAX_SIDE // stride)
    dynamic_shapes = ({2: stride * h, 3: stride * w},)
    dummy = torch.zeros(shape)
    start = time.perf_counter()
    try:
        with quiet_exporter():
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                dynamo=True,
                opset_version=EXPORTERS["dynamo"],
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:
        raise UserInputError(
            "The dynamo exporter cannot export this network with dynamic height and width "
            f"({type(exc).__name__}: {_first_line(exc)}); export it at a fixed --resolution instead."
        ) from None
    seconds = time.perf_counter() - start
    check_onnx_file(path, "dynamo")
    dims = onnx_input_shape(path)
    if any(isinstance(d, int) for d in dims[2:4]):
        raise UserInputError(
            f"The dynamo exporter fixed the input size of this network to {dims} instead of keeping height and width "
            "dynamic; export it at a fixed --resolution instead."
        )
    return seconds


def _verify_in_onnxruntime(
    path: Path,
    model: nn.Module,
    resolutions: Sequence[tuple[int, int]],
    channels: int,
    threads: int,
    progress: Progress | None,
) -> tuple[list[dict[str, Any]], ParityResult, dict[str, Any]]:
    """Parity of the ONNX file in ONNX Runtime (CPU) against PyTorch at each resolution."""
    from casprof.backends import make_runner

    h0, w0 = resolutions[0]
    spec = RunnerSpec(input_shape=(1, channels, h0, w0), device="cpu", threads=threads, seed=PARITY_SEED)
    checks: list[dict[str, Any]] = []
    first: ParityResult | None = None
    with make_runner("onnxruntime", path, spec) as runner:
        info = runner.info()
        for index, (h, w) in enumerate(resolutions):
            x = seeded_input((1, channels, h, w))
            reference = torch_reference(model, x)
            try:
                result = compare_outputs(reference, runner.infer(x), FP32)
                problem = None if result else "; ".join(result.failures())
            except Exception as exc:  # a size baked into the graph fails in ONNX Runtime or changes the shape
                if index == 0:
                    raise MeasurementError(
                        f"The exported ONNX file does not run like PyTorch in ONNX Runtime at {h}x{w} ({_first_line(exc)}); "
                        "nothing was written."
                    ) from None
                result, problem = None, _runtime_error_summary(exc)
            if index > 0 and problem is not None:
                # The exporter declared H and W dynamic but fixed some size inside the graph.
                raise UserInputError(
                    f"The dynamo exporter could not keep height and width dynamic for this network: the file exported at "
                    f"{resolutions[0][0]}x{resolutions[0][1]} fails at {h}x{w} ({problem}), because an operation reads the "
                    "map size as a Python number (such as the spp_* pooling windows); export it at a fixed --resolution instead."
                )
            assert result is not None
            _say(progress, f"Parity in ONNX Runtime at {h}x{w}: {result.summary()}")
            if not result:
                raise MeasurementError(
                    f"The exported ONNX file does not match PyTorch in ONNX Runtime at {h}x{w} "
                    f"({'; '.join(result.failures())}); nothing was written."
                )
            checks.append({"resolution": [h, w], **result.to_dict()})
            first = first or result
    assert first is not None
    backend = {
        "backend": "onnxruntime",
        "backend_version": info.backend_version,
        "provider": info.details.get("provider"),
        "threads": threads,
        "reference": f"torch {torch.__version__} on the CPU in fp32",
        "input": f"standard normal, seed {PARITY_SEED}",
    }
    return checks, first, backend


def export_genotype(
    genotype_path: Path,
    *,
    weights: Path | None = None,
    onnx_path: Path | None = None,
    resolution: str | tuple[int, int] = DEFAULT_RESOLUTION,
    dynamic: bool = False,
    exporter: str = DEFAULT_EXPORTER,
    int8: bool = False,
    threads: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> ExportResult:
    """Export a genotype's network to one parity-verified ONNX file (see the module docstring).

    Args:
        genotype_path: the genotype file.
        weights: a state_dict file; None for a seeded random initialisation.
        onnx_path: the output file (default: :func:`default_onnx_path`); its folder must exist.
        resolution: ``"HxW"`` or ``(H, W)``; the export (and first parity) resolution.
        dynamic: dynamic height and width (dynamo exporter only).
        exporter: ``"dynamo"`` (opset 18) or ``"torchscript"`` (opset 17).
        int8: also write a Q/DQ int8 ONNX file (:func:`int8_path_for`) and check it runs.
        threads: ONNX Runtime threads of the parity check (default: all CPUs of this process).
        seed: seed of the random initialisation when there are no weights.

    Raises:
        UserInputError: bad genotype, weights, resolution, path or option combination (exit 2).
        MeasurementError: the export or the parity check failed (exit 1; nothing written).
    """
    genotype_path = Path(genotype_path)
    genotype = load_genotype(genotype_path)
    config = genotype.network
    if isinstance(resolution, str):
        size = parse_resolution(resolution, config)
    else:
        size = config.check_resolution(int(resolution[0]), int(resolution[1]))
    check_exporter(exporter)
    if dynamic and exporter != "dynamo":
        raise UserInputError("--dynamic needs the dynamo exporter (torch.export dynamic shapes); drop --exporter torchscript.")
    target = Path(onnx_path) if onnx_path is not None else default_onnx_path(genotype_path, size, dynamic)
    meta_path = metadata_path_for(target)
    ensure_parent_exists(target)
    ensure_parent_exists(meta_path)
    if weights is not None and not Path(weights).is_file():
        raise UserInputError(f"The weights file {weights} does not exist.")
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise UserInputError(f"The thread count must be at least 1, got {threads}.")

    built = build_network(genotype, weights, seed=seed, genotype_path=genotype_path)
    shape = (1, config.in_channels, size[0], size[1])
    resolutions = [size]
    if dynamic:
        h, w = size
        s = config.total_stride
        resolutions.append((h + s if h + s <= MAX_SIDE else h - s, w + 2 * s if w + 2 * s <= MAX_SIDE else w - 2 * s))

    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp.onnx")
    meta_tmp: Path | None = None
    try:
        _say(progress, f"Exporting {genotype_path} at {size[0]}x{size[1]}{' (dynamic H/W)' if dynamic else ''} with the {exporter} exporter…")
        if dynamic:
            seconds = _export_dynamic(built.model, shape, tmp, config.total_stride)
        else:
            seconds = export_onnx(built.model, shape, tmp, exporter=exporter, device="cpu").seconds
        checks, parity, parity_backend = _verify_in_onnxruntime(
            tmp, built.model, resolutions, config.in_channels, threads, progress
        )
        import onnx

        proto = onnx.load(str(tmp), load_external_data=False)
        onnx_facts = {
            "file": target.name,
            "sha256": file_sha256(tmp),
            "bytes": tmp.stat().st_size,
            "exporter": exporter,
            "opset": onnx_opset(proto),
            "precision": "fp32",
            "external_data": False,
            "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME,
            "input_shape": onnx_input_shape(tmp),
            "dynamic": dynamic,
            "export_seconds": seconds,
            "torch_version": torch.__version__,
            "onnx_version": onnx.__version__,
        }
        provenance = built.provenance()
        metadata: dict[str, Any] = {
            "schema_version": METADATA_SCHEMA_VERSION,
            "tool": "cas deploy export",
            "tool_version": __version__,
            "created": utc_now(),
            "onnx": onnx_facts,
            "genotype": provenance["genotype"],
            "network": config.network_block(input_size=size),
            "network_fingerprint": provenance["network_fingerprint"],
            "resolution": list(size),
            "weights": provenance["weights"],
            "parity": {**parity.to_dict(), **parity_backend, "checks": checks},
            "int8": None,
            "tensorrt": None,
        }
        meta_tmp = pending_file(meta_path, synced_writer(json_text(metadata).encode("utf-8")))
        give_usual_permissions(tmp)
        _install_pair(tmp, target, meta_tmp, meta_path)
    finally:
        for leftover in (tmp, meta_tmp):
            if leftover is not None:
                with contextlib.suppress(OSError):
                    leftover.unlink()

    result = ExportResult(
        onnx_path=target,
        metadata_path=meta_path,
        metadata=metadata,
        parity=parity,
        built=built,
        input_shape=shape,
        exporter=exporter,
        dynamic=dynamic,
    )
    if int8:
        result = add_int8(result, threads=threads, progress=progress)
    return result


# --------------------------------------------------------------------------------------------
# int8 (Q/DQ) and TensorRT
# --------------------------------------------------------------------------------------------


def _update_metadata(result: ExportResult, key: str, value: Any) -> dict[str, Any]:
    metadata = {**result.metadata, key: value}
    atomic_write_json(result.metadata_path, metadata)
    return metadata


def add_int8(result: ExportResult, *, threads: int | None = None, progress: Progress | None = None) -> ExportResult:
    """Write the Q/DQ int8 ONNX file beside ``result``'s, run it in ONNX Runtime, record it.

    Its parity against PyTorch is recorded with the (informational) int8 thresholds: calibration
    on random inputs says little about accuracy on images.
    """
    from casprof.backends import make_runner

    threads = default_threads() if threads is None else threads
    path = int8_path_for(result.onnx_path)
    _say(progress, f"Quantizing to a Q/DQ int8 ONNX file {path} (ONNX Runtime static quantization)…")
    info = quantize_qdq(result.onnx_path, path, result.input_shape, seed=PARITY_SEED + 1)
    x = seeded_input(result.input_shape)
    spec = RunnerSpec(input_shape=result.input_shape, device="cpu", threads=threads, seed=PARITY_SEED)
    try:
        with make_runner("onnxruntime", path, spec) as runner:
            y = runner.infer(x)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    parity = compare_outputs(torch_reference(result.built.model, x), y, INT8)
    _say(progress, f"int8 Q/DQ in ONNX Runtime (informational): {parity.summary()}")
    block = {**info.to_dict(), "path": path.name, "runs_in_onnxruntime": True, "parity_informational": parity.to_dict()}
    metadata = _update_metadata(result, "int8", block)
    return replace(result, metadata=metadata, int8=info)


def build_trt_engine(
    result: ExportResult,
    precision: TrtPrecision | str,
    *,
    engine_path: Path | None = None,
    device: str = "cuda:0",
    timing_cache: Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """Build a TensorRT engine from an export, check its parity, write it with metadata.

    Raises:
        BackendUnavailableError: TensorRT or a CUDA GPU is not here (exit 2).
        UserInputError: a dynamic export (the engine is built for one input size), a bad path or an
            unusable timing cache (a file, or a folder holding one per TensorRT version and GPU).
        MeasurementError: the build failed or the engine's output does not match PyTorch.
    """
    from casprof.backends.tensorrt_runner import TensorRTRunner, tensorrt_unavailable_reason

    precision = TrtPrecision(precision)
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(reason)
    if result.dynamic:
        raise UserInputError("A TensorRT engine is built for one input size here; export without --dynamic for --trt.")
    engine_path = Path(engine_path) if engine_path is not None else default_engine_path(result.onnx_path, precision)
    ensure_parent_exists(engine_path)
    source: Any
    if precision is TrtPrecision.FP32:
        source = result.onnx_path
    elif precision is TrtPrecision.FP16:
        source = result.built.model  # exported again in half precision on the GPU
    else:
        if result.int8 is None:
            result = add_int8(result, progress=progress)
        assert result.int8 is not None
        source = result.int8.path
    runner_precision = Precision.FP16 if precision is TrtPrecision.FP16 else Precision.FP32
    spec = RunnerSpec(input_shape=result.input_shape, device=device, precision=runner_precision, seed=PARITY_SEED)
    _say(progress, f"Building a {precision.value} TensorRT engine (strongly typed) on {device}…")
    with TensorRTRunner(source, spec, exporter=result.exporter, timing_cache=timing_cache) as runner:
        x = seeded_input(result.input_shape)
        thresholds = thresholds_for(precision.value, device)
        parity = compare_outputs(torch_reference(result.built.model, x), runner.infer(x), thresholds)
        _say(progress, f"Parity of the TensorRT engine: {parity.summary()}")
        if not parity and precision is not TrtPrecision.INT8:
            raise MeasurementError(
                f"The TensorRT engine does not match PyTorch ({'; '.join(parity.failures())}); nothing was written."
            )
        runner.save_engine(engine_path)
    meta_path = metadata_path_for(engine_path)
    engine_meta = read_json_file(meta_path, "engine metadata")
    engine_meta.update(
        {
            "precision": precision.value,
            "source_onnx": str(source) if isinstance(source, Path) else "half-precision export of the genotype's network",
            "parity": parity.to_dict(),
            "weights": result.metadata.get("weights"),
            "genotype": result.metadata.get("genotype"),
            "network_fingerprint": result.metadata.get("network_fingerprint"),
            "created": utc_now(),
        }
    )
    atomic_write_json(meta_path, engine_meta)
    _update_metadata(
        result,
        "tensorrt",
        {"engine": str(engine_path), "sha256": file_sha256(engine_path), "precision": precision.value, "parity": parity.to_dict()},
    )
    return engine_path


def load_export_metadata(onnx_path: Path) -> dict[str, Any] | None:
    """The ``<onnx>.json`` metadata of an exported file, or None when there is none."""
    path = metadata_path_for(onnx_path)
    if not path.is_file():
        return None
    data = read_json_file(path, "export metadata")
    return data if isinstance(data, dict) else None


def check_export_sha(onnx_path: Path, metadata: dict[str, Any], sha256: str) -> None:
    """Refuse an ONNX file whose ``<onnx>.json`` metadata records another sha256 (a torn or edited export)."""
    block = metadata.get("onnx")
    recorded = block.get("sha256") if isinstance(block, dict) else None
    if recorded != sha256:
        raise UserInputError(
            f"The ONNX file {onnx_path} does not match the sha256 in its metadata {metadata_path_for(onnx_path)} "
            "(an interrupted or hand-edited export); export it again or remove the metadata file."
        )


def describe(result: ExportResult) -> str:
    """A short human summary of an export (printed by the command)."""
    meta = result.metadata
    lines = [
        f"Wrote {result.onnx_path} ({meta['onnx']['exporter']} exporter, opset {meta['onnx']['opset']}, "
        f"input {meta['onnx']['input_shape']}, sha256 {meta['onnx']['sha256'][:16]}…)",
        f"Parity in ONNX Runtime vs PyTorch: {result.parity.summary()}",
        f"Weights: {result.built.weights.describe()}",
    ]
    if result.int8 is not None:
        lines.append(f"Wrote {result.int8.path} (Q/DQ int8, {result.int8.qdq_nodes} Q/DQ nodes)")
    lines.append(f"Wrote {result.metadata_path}")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_EXPORTER",
    "ExportResult",
    "TrtPrecision",
    "add_int8",
    "build_trt_engine",
    "check_export_sha",
    "default_engine_path",
    "default_onnx_path",
    "describe",
    "export_genotype",
    "int8_path_for",
    "load_export_metadata",
    "metadata_path_for",
]
