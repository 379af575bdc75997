"""Cnn14's convolutions in 8-bit integers, through ONNX Runtime: measured on this project's 2-core machines, a
batch of 16 two-second windows takes 0.17 s against 0.71 s in float32 on an EPYC Zen 4 (AVX-512 VNNI, which
multiplies 8-bit integers directly), and 0.53 s against 1.02 s on an EPYC Zen 3 (AVX2; bench/export.py).
bench/ingest.py has the pipeline figures.

Static quantization: each convolution's weights get one int8 scale per output channel, and its input one uint8
scale, fixed once from the ranges a calibration batch of generated sounds reaches. The front end (the STFT,
computed before the graph, and the log-mel) and the first convolution stay float32: the power spectra span many
decades before their log, and the first convolution sees the normalised log-mel directly. Measured on 96
generated sounds: the first convolution quantized as well brought the least cosine to float32 from 0.995 down
to 0.75, and the STFT's convolutions too (when the graph still held them) to 0.70. The dense layers stay float32
too: they are a small share of the time and they carry the class scores.

Calibration sounds are synthetic, and so is the probe the result is checked on at load, so how far real audio
drifts with the real weights is not measured here: that is why ``--runtime int8`` is asked for, never chosen
by ``auto``.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

# Least embedding cosine, most class-probability error on the probe. Measured on the tests' random-weight Cnn14
# with calibrated batch norms: cosine >= 0.9948 on 96 generated sounds, top-10 neighbour sets 98 % the same.
AGREEMENT = 0.99, 0.05

KEEP_FLOAT32 = ("/conv_block1/conv1/Conv",)
# From block 1's ReLU to block 6's pooling the activations stay 8-bit: each ReLU folds into its convolution's
# output range, and the pooling and the slices and joins of the unpadded blocks (onnx_runtime) run on uint8, with
# no conversion to float32 and back between them. Measured on an EPYC Zen 3: 1.03-1.05x a batch of 16 windows against
# quantizing the convolutions alone (bench/export.py), and the embeddings as close to float32's (least cosine 0.9968
# against 0.9955 on 72 generated sounds, the tests' calibrated random-weight Cnn14).
QUANTIZED_OPS = ("Conv", "Relu", "AveragePool", "Slice", "Concat")
GAINS = (1.0, 0.3, 0.05, 0.01)  # quiet recordings too: each convolution's input range must cover them


def calibration_batches(batch_size: int = 4):
    """Generated 2 s windows at 32 kHz, every kind of test sound at several levels, in small batches."""
    from ..synth import KINDS, collage, sound

    windows = [
        sound(kind, 2.0, seed=3000 + 7 * i + j) * gain for i, kind in enumerate(KINDS) for j, gain in enumerate(GAINS)
    ]
    windows += [collage(2.0, seed=seed) for seed in range(4)]
    batch = np.stack(windows).astype(np.float32)
    return [batch[i : i + batch_size] for i in range(0, len(batch), batch_size)]


def quantize(
    plain_graph: bytes,
    destination: str,
    graph_input,
    keep_float32: tuple[str, ...] | None = None,
    quantized_ops: tuple[str, ...] = QUANTIZED_OPS,
) -> None:
    """Write the int8 twin of the float32 graph ``plain_graph`` (as exported, not yet optimised) to ``destination``.
    ``graph_input`` turns a batch of audio into what the graph is fed; the nodes named in ``keep_float32``
    (default ``KEEP_FLOAT32``) stay float32, and so does every node whose type is not in ``quantized_ops``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    keep_float32 = KEEP_FLOAT32 if keep_float32 is None else keep_float32

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration_batches())

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else graph_input(batch)

    graph = _with_own_initializers(onnx.load_from_string(plain_graph))
    missing = set(keep_float32) - {node.name for node in graph.graph.node}
    if missing:  # the quantizer would silently quantize them, and the load-time check refuse the graph
        raise ValueError(f"the graph has no {', '.join(sorted(missing))} to keep in float32")
    with _quantizer_logging_kept_quiet():
        quantize_static(
            graph,
            destination,
            Calibration(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(quantized_ops),
            nodes_to_exclude=list(keep_float32),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def _with_own_initializers(graph):
    """The graph with each Identity of an initializer replaced by a copy of it. torch's exporter shares identical
    tensors between layers through Identity nodes: the zero biases of an untrained checkpoint's folded batch
    norms, say. The quantizer needs each convolution's bias as its own initializer; a shared one it leaves
    float32, and ONNX Runtime then cannot fuse that convolution into one integer kernel (measured on a
    random-weight Cnn14: 2 of the 11 quantized convolutions left unfused, 0.44 s a batch of 16 windows against
    0.25 s with all fused, EPYC Zen 4)."""
    import onnx

    initializers = {tensor.name: tensor for tensor in graph.graph.initializer}
    shared = [n for n in graph.graph.node if n.op_type == "Identity" and n.input[0] in initializers]
    for node in shared:
        copy = onnx.TensorProto()
        copy.CopyFrom(initializers[node.input[0]])
        copy.name = node.output[0]
        graph.graph.initializer.append(copy)
        graph.graph.node.remove(node)
    return graph


class _QuantizerAdvice(logging.Filter):
    """The quantizer's notices: advice to pre-process (torch's export already folded the batch norms and
    inferred the shapes) and biases it will not quantize (``_with_own_initializers`` leaves none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quantizer_logging_kept_quiet():
    """The quantizer logs through the root logger's module functions, which install a handler on the root
    logger of a program that has none, and from then on every library's warnings reach the user's terminal.
    A handler of our own for the duration stops that; the quantizer's notices are dropped."""
    root = logging.getLogger()
    notices, placeholder = _QuantizerAdvice(), logging.NullHandler()
    root.addFilter(notices)
    root.addHandler(placeholder)
    try:
        yield
    finally:
        root.removeHandler(placeholder)
        root.removeFilter(notices)
