"""Cnn14 through ONNX Runtime: on 2 CPU cores it embeds about 1.8x faster than torch eager (bench/ingest.py).

The graph is exported once from the loaded checkpoint, optimised by ONNX Runtime for this CPU, and cached beside
the checkpoint, named after the checkpoint's size and modification time (a replaced checkpoint is exported
again) and after the ONNX Runtime version and instruction set it was optimised for. Later loads skip the
optimisation, which is what makes ONNX Runtime briefly need several times the graph's size: measured, a session
built from the cached graph peaks at 0.6 GB, one that optimises the plain export at 1.2 GB, at the same speed.
A graph is used only after its outputs match torch's on a probe batch; anything that goes wrong leaves the
caller on torch.

The graph starts after the STFT: scipy computes the power spectra (cnn14_stft.py) several times faster than the
graph's own STFT convolutions, and a batch runs 1.08x faster in float32, 1.11x in int8 (bench/export.py, EPYC
Zen 3).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..cpu import cpu_flags
from ..memory import return_freed_memory
from . import int8
from .cnn14_stft import power_spectra
from .probe import PROBE_SAMPLES, disagreement, reference

log = logging.getLogger(__name__)

EXPORT_FORMAT = "6"  # bump when the export itself changes, so caches are rebuilt
AGREEMENT = 0.99999, 1e-3  # least embedding cosine, most class-score error: float reassociation, nothing more
AGREEMENTS = {"float32": AGREEMENT, "int8": int8.AGREEMENT}


def available() -> bool:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_path(checkpoint: Path, precision: str = "float32") -> Path:
    import onnxruntime

    made_for = f"ort{onnxruntime.__version__}-{_instruction_set()}"
    kind = "" if precision == "float32" else f"{precision}."
    return checkpoint.with_name(f"{_export_name(checkpoint)}{kind}{made_for}.onnx")


def _export_name(checkpoint: Path) -> str:
    """What every cached graph of this checkpoint and export format is named with first, whatever its CPU."""
    stat = checkpoint.stat()
    return f"{checkpoint.name}.{stat.st_size}-{stat.st_mtime_ns}.v{EXPORT_FORMAT}."


def _instruction_set() -> str:
    """What ONNX Runtime's CPU-specific optimisations depend on, so a model folder shared between machines
    keeps one optimised graph per kind of CPU."""
    flags = cpu_flags()
    # 64-bit ARM lists its NEON as "asimd", 32-bit ARM as "neon": one tag for both.
    isa = next((isa for isa in ("avx512f", "avx2", "asimd", "neon") if isa in flags), "base")
    return "neon" if isa == "asimd" else isa


class OnnxCnn14:
    """Callable like the torch model on numpy input: batch (n, samples) -> (embeddings, class scores)."""

    def __init__(self, session, precision: str = "float32"):
        self.session = session
        self.precision = precision

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embedding, scores = self.session.run(None, graph_input(batch))
        return embedding, scores


def graph_input(batch: np.ndarray) -> dict[str, np.ndarray]:
    """What the exported graph is fed for a (batch, samples) array of 32 kHz audio."""
    return {"power": power_spectra(batch)}


def load_onnx_cnn14(load_torch, checkpoint: Path, precision: str = "float32") -> OnnxCnn14 | None:
    """The ONNX Runtime twin of the torch Cnn14 that ``load_torch()`` builds, or None (with the reason logged)
    when it cannot be had. ``precision`` "int8" quantizes the convolutions (see int8.py) before optimising.

    A cached graph vouched for at export (its checksum, and torch's outputs on the probe, kept beside it) is
    loaded without torch at all. Otherwise torch builds the model, the graph is exported (or a cached one that
    does not load or does not match torch, a torn write or another exporter's, is rebuilt once), and torch's
    model is let go before ONNX Runtime builds its session, which briefly needs several times the graph's size."""
    target = cache_path(checkpoint, precision)
    twin = _vouched_for(target, precision)
    if twin is not None:
        return twin
    for attempt in (1, 2):
        model = load_torch()  # a checkpoint that does not load is the caller's error to report, not ours
        graph = None
        was_cached = target.exists()
        try:
            expected = reference(model)
            plain = None if was_cached else _plain_graph_beside(model, target, precision)
            # torch's copy of the weights goes before ONNX Runtime's optimiser needs several times the graph's size.
            model = None
            gc.collect()
            return_freed_memory()
            graph = str(target) if plain is None else _optimised(plain, checkpoint, target, precision)
            twin = OnnxCnn14(_session(graph, precision=precision), precision)
            problem = disagreement(expected, twin, *AGREEMENTS[precision])
        except Exception as e:  # export and session creation raise many kinds; torch still works
            problem = f"{type(e).__name__}: {e}"
        if not problem:
            if isinstance(graph, str):
                _vouch(graph, expected)
            return twin
        if isinstance(graph, str):
            for path in (graph, graph + ".json"):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if attempt == 2 or not was_cached:  # a fresh export would only fail the same way again
            log.warning("ONNX Runtime cannot run this Cnn14 in %s (%s)", precision, problem)
            return None
    return None


def _vouch(graph: str, expected: list[np.ndarray]) -> None:
    """Keep, beside a graph that matched torch, its checksum and torch's outputs on the probe."""
    note = {"sha256": _sha256(graph), "embedding": expected[0].tolist(), "scores": expected[1].tolist()}
    try:
        fd, partial = tempfile.mkstemp(dir=os.path.dirname(graph), suffix=".partial")
        with os.fdopen(fd, "w") as f:
            json.dump(note, f)
        os.replace(partial, graph + ".json")
    except OSError as e:  # the next load checks against torch again: slower, never wrong
        log.info("cannot keep the ONNX graph's checksum beside it (%s)", e)


def _vouched_for(graph: Path, precision: str) -> OnnxCnn14 | None:
    """The cached graph's session, if the graph is the one vouched for and still reproduces torch's outputs."""
    try:
        note = json.loads(Path(str(graph) + ".json").read_text())
        if _sha256(str(graph)) != note["sha256"]:
            return None
        twin = OnnxCnn14(_session(str(graph)), precision)
        expected = [np.asarray(note["embedding"], np.float32), np.asarray(note["scores"], np.float32)]
    except Exception:  # missing, torn or foreign: the caller checks against torch instead
        return None
    return twin if disagreement(expected, twin, *AGREEMENTS[precision]) is None else None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


# The int8 graph's one float32 convolution (block 1's first) stays in the plain layout: in ONNX Runtime's blocked
# one its output was reordered back before being quantized (4.9 ms of a batch of 16 windows), where the plain
# convolution takes 1.2 ms longer than the blocked one. Measured on an EPYC Zen 4, taking turns, the same outputs:
# 150.6 against 152.7 ms best, 155.7 against 159.1 median (155.8 against 159.5, 163.8 against 168.8 before that).
OPTIMIZERS_LEFT_OUT = {"float32": [], "int8": ["NchwcTransformer"]}


def _session(
    graph: str | bytes, threads: int | None = None, optimised_to: str | None = None, precision: str = "float32"
):
    """A session on ``graph``, a path or an export's bytes. With ``optimised_to``, the graph is optimised now and
    written there; otherwise a path is a cached graph, already optimised, and bytes are optimised in memory, each
    as ``precision`` is. ``threads`` None is ONNX Runtime's default, one per physical core."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # Its threads otherwise spin after each run, on the cores the indexer's reader and writer need. Measured on an
    # EPYC Zen 5, int8: an index run 1.78-1.87 s against 2.02-2.06 s, the model alone 1.55-1.60 s against 1.65-1.67.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if isinstance(graph, str) and not optimised_to:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    if optimised_to:
        options.optimized_model_filepath = optimised_to
        options.log_severity_level = 3  # its warning that the graph is CPU-specific: the cache's name says so
    return onnxruntime.InferenceSession(
        graph, options, providers=["CPUExecutionProvider"], disabled_optimizers=OPTIMIZERS_LEFT_OUT[precision]
    )


def _plain_graph_beside(model, target: Path, precision: str) -> str | bytes:
    """The exported graph, not yet optimised, in a scratch file beside ``target`` (so that nobody holds its bytes
    while ONNX Runtime optimises it); its bytes if that folder is read-only."""
    plain = _plain_graph(model, precision)
    try:
        fd, path = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".plain.partial")
    except OSError as e:
        log.info("cannot cache the ONNX graph beside %s (%s); keeping it in memory", target.parent, e)
        return plain
    with os.fdopen(fd, "wb") as f:
        f.write(plain)
    return path


def _optimised(plain: str | bytes, checkpoint: Path, target: Path, precision: str) -> str | bytes:
    """The path of ``target``, the plain graph optimised by ONNX Runtime for this CPU; plain bytes (a read-only
    folder) are returned as they are, for the session to optimise in memory."""
    if isinstance(plain, bytes):
        return plain
    partial = None
    try:
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".partial")
        os.close(fd)
        _session(plain, 1, optimised_to=partial, precision=precision)  # ONNX Runtime writes the optimised graph
        os.replace(partial, target)  # atomic: a concurrent loader sees the whole graph or none
    finally:
        for scratch in filter(None, (partial, plain)):
            with contextlib.suppress(OSError):
                os.unlink(scratch)
    for stale in checkpoint.parent.glob(f"{checkpoint.name}.*.onnx*"):  # a replaced checkpoint's, an old format's
        if not stale.name.startswith(_export_name(checkpoint)):
            with contextlib.suppress(OSError):
                stale.unlink()
    return str(target)


def _plain_graph(model, precision: str) -> bytes:
    """The model exported to ONNX, not yet optimised; in int8, quantized (in a scratch folder: the quantizer
    writes files)."""
    if precision == "float32":
        return _lean_export(model)
    buffer = io.BytesIO()
    with _blocks_shaped(model, INT8_BLOCKS):
        _export(model, buffer)
    with tempfile.TemporaryDirectory() as scratch:
        quantized = os.path.join(scratch, "int8.onnx")
        int8.quantize(buffer.getvalue(), quantized, graph_input)
        return Path(quantized).read_bytes()


# How the int8 export shapes Cnn14's blocks (cnn14.ConvBlock), each measured on a batch of 16 windows in int8:
# the convolutions of 4 mel bins or fewer without their padding's zero columns, 1.08-1.12x on an EPYC Zen 3; each
# 2x2 average pool as a depthwise convolution, 1.08x on an EPYC Zen 4 (154 against 166 ms best, 157 against 170
# median). Neither made float32 faster.
NARROW_CONVOLUTIONS_UNPADDED = {"unpadded_up_to": 4}
POOLS_BY_CONVOLUTION = {"pool_by_convolution": True}
INT8_BLOCKS = NARROW_CONVOLUTIONS_UNPADDED | POOLS_BY_CONVOLUTION


@contextlib.contextmanager
def _blocks_shaped(model, shape: dict):
    """Every ConvBlock of ``model`` with the attributes in ``shape`` set, for the export; the class's after."""
    from .cnn14 import ConvBlock

    blocks = [module for module in model.modules() if isinstance(module, ConvBlock)]
    for block in blocks:
        for name, value in shape.items():
            setattr(block, name, value)
    try:
        yield
    finally:
        for block in blocks:
            for name in shape:
                delattr(block, name)  # back to the class's default


FROM_POWER_PREFIX = "cnn14."  # what _export's wrapper module puts before each of the model's weight names


def _lean_export(model) -> bytes:
    """``_export``'s graph with the weights added afterwards, one at a time: the exporter, given the weights,
    peaked at 2.0 GB (the model, then its folded, graph and serialized copies of them), over the 1.5 GB a
    2-hour file is indexed in. The exporter traces the structure, the weights as graph inputs; each goes in as
    an initializer. Its batch norms stay apart from their convolutions, for ONNX Runtime's optimiser to fold."""
    import onnx
    from onnx import numpy_helper

    buffer = io.BytesIO()
    _export(model, buffer, with_weights=False)
    graph = onnx.load_from_string(buffer.getvalue())
    weights = {f"{FROM_POWER_PREFIX}{name}": tensor for name, tensor in model.state_dict().items()}
    for given in [i for i in graph.graph.input if i.name in weights]:
        graph.graph.initializer.append(numpy_helper.from_array(weights[given.name].numpy(), given.name))
        graph.graph.input.remove(given)
    if [i.name for i in graph.graph.input] != ["power"]:  # a weight by another name would be a graph input
        raise ValueError(f"the exported graph wants inputs {[i.name for i in graph.graph.input]}, not just power")
    return graph.SerializeToString()


def _export(model, destination, with_weights: bool = True) -> None:
    """Write Cnn14 from its power spectra onwards (``Cnn14.from_power``) as an ONNX graph; ``with_weights``
    False leaves them out, as graph inputs named after the model's own (``FROM_POWER_PREFIX`` before them)."""
    import torch

    class FromPower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn14 = model

        def forward(self, power):
            return self.cnn14.from_power(power)

    probe = torch.from_numpy(power_spectra(np.zeros((1, PROBE_SAMPLES), np.float32)))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices are not the user's concern
        torch.onnx.export(
            FromPower().eval(),  # the exporter puts the module back in its mode, and with it the model
            (probe,),
            destination,
            input_names=["power"],
            output_names=["embedding", "scores"],
            dynamic_axes={"power": {0: "batch", 2: "frames"}, "embedding": {0: "batch"}, "scores": {0: "batch"}},
            opset_version=17,
            dynamo=False,  # the TorchScript exporter traces this plain CNN without onnxscript
            export_params=with_weights,
            do_constant_folding=with_weights,  # folding needs the weights' values
        )
