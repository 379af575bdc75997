"""PANNs Cnn14: 2048-d embeddings plus AudioSet tags, from the official checkpoint in ``model_dir``."""

from __future__ import annotations

import functools
import os
import threading

import numpy as np

from ..errors import ModelNotAvailable
from ..hookspecs import hookimpl
from ..labels import audioset_labels
from ..weights import CHECKPOINTS
from . import Embedder, packed


class PannsCnn14(Embedder):
    name = "panns-cnn14"
    version = "1"
    dim = 2048
    sample_rate = 32000
    description = "PANNs Cnn14 trained on AudioSet (2048-d, AudioSet tags)"
    checkpoint = CHECKPOINTS["panns-cnn14"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._model = None
        self._lock = threading.Lock()
        self.labels = audioset_labels()

    @property
    def checkpoint_path(self):
        return self.model_dir / self.checkpoint.filename

    def unavailable_reason(self) -> str | None:
        if not self.checkpoint_path.exists():
            return f"no checkpoint at {self.checkpoint_path}; run: audiosim models fetch {self.name}"
        return None

    def load(self):
        with self._lock:
            if self._model is None:
                self._model = self._fast_twin() or on_best_device(load_cnn14(self.checkpoint_path))
        return self._model

    def _fast_twin(self):
        """On CPU, a twin runs Cnn14 faster than torch eager: bfloat16 where the CPU has AMX or AVX-512 BF16, float32
        on oneDNN's packed kernels where it has AVX-512 or AVX2 without them, else ONNX Runtime (in int8 only when
        asked for). On a GPU torch stays."""
        if self.runtime == "torch" or (self.runtime == "auto" and _has_gpu()):
            return None
        if self.runtime == "int8":
            return self._onnx_twin("int8")
        if self.runtime in ("auto", "bfloat16"):
            twin = self._packed_twin("bfloat16")
            if twin is not None or self.runtime == "bfloat16":
                return twin
        if self.runtime == "float32" or (self.runtime == "auto" and packed.float32_preferred()):
            twin = self._packed_twin("float32")
            if twin is not None or self.runtime == "float32":
                return twin
        return self._onnx_twin()

    def _packed_twin(self, precision):
        if precision == "bfloat16" and not packed.bfloat16_available():
            if self.runtime == "bfloat16":
                raise ModelNotAvailable(
                    "--runtime bfloat16 needs a CPU with AMX or AVX-512 BF16 (amx_bf16 or avx512_bf16 in /proc/cpuinfo)"
                )
            return None
        twin = packed.load_packed_cnn14(load_cnn14(self.checkpoint_path), precision)
        if twin is None and self.runtime == precision:
            raise ModelNotAvailable(f"Cnn14 cannot run in {precision} on this checkpoint and CPU (see the log)")
        return twin

    def _onnx_twin(self, precision="float32"):
        from . import onnx_runtime

        asked = self.runtime in ("onnx", "int8")
        if not onnx_runtime.available():
            if asked:
                raise ModelNotAvailable(
                    f"--runtime {self.runtime} needs onnxruntime and onnx: pip install onnx onnxruntime"
                )
            return None
        twin = onnx_runtime.load_onnx_cnn14(lambda: load_cnn14(self.checkpoint_path), self.checkpoint_path, precision)
        if twin is None and asked:
            raise ModelNotAvailable(f"ONNX Runtime could not run this Cnn14 checkpoint in {precision} (see the log)")
        return twin

    @property
    def engine(self) -> str:
        """Which engine runs the model once loaded: "onnxruntime", "onnxruntime-int8", "torch-bfloat16",
        "torch-float32" (oneDNN's packed kernels) or "torch" (the model's eager modules)."""
        from .onnx_runtime import OnnxCnn14

        model = self.load()
        if isinstance(model, OnnxCnn14):
            return "onnxruntime" if model.precision == "float32" else f"onnxruntime-{model.precision}"
        return f"torch-{model.precision}" if isinstance(model, packed.PackedCnn14) else "torch"

    def workers(self) -> int:
        """On a CPU, torch runs a batch a core: Cnn14 in bfloat16 took 4.6-4.8 s for 256 windows as two batches
        at once on an EPYC Zen 4's 2 cores, 4.9-5.1 s one batch at a time over both, and in an index run a core
        that the reader or writer takes for a moment then holds up one batch, not both halves of every one.
        ONNX Runtime keeps its own threads; on a GPU a batch runs alone."""
        from .onnx_runtime import OnnxCnn14

        model = self.load()
        if isinstance(model, OnnxCnn14) or _has_gpu() or _openmp_threads() is None:
            return 1
        import torch

        return torch.get_num_threads()

    def one_core(self) -> None:
        import torch

        # torch sets a thread's OpenMP team size from its own default when the thread first uses it: have that
        # happen now, then set this thread's alone. torch.set_num_threads(1) would also become the default of
        # every thread that starts using torch afterwards (measured: the next index run on 1 core, twice as long).
        torch.get_num_threads()
        _openmp_threads()(1)

    def embed_batch(self, batch):
        from .onnx_runtime import OnnxCnn14

        model = self.load()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if isinstance(model, (OnnxCnn14, packed.PackedCnn14)):
            return model(batch)
        import torch  # only here: the ONNX path runs without torch in memory (0.2 GB)

        device = next(model.parameters()).device
        with torch.inference_mode():
            embedding, scores = model(torch.from_numpy(batch).to(device))
        return embedding.cpu().numpy(), scores.cpu().numpy()


def cpu_runtimes() -> tuple[str, ...]:
    """The engines that can run Cnn14 on this machine's CPU, the one ``auto`` picks first: what the benches
    compare."""
    from . import onnx_runtime

    onnx = onnx_runtime.available()
    usable = {
        "bfloat16": packed.bfloat16_available(),
        "float32": packed.float32_preferred(),  # elsewhere no faster than ONNX Runtime, or unmeasured
        "onnx": onnx,
        "int8": onnx,
        "torch": True,
    }
    return tuple(runtime for runtime, ok in usable.items() if ok)


@functools.cache
def _openmp_threads():
    """OpenMP's ``omp_set_num_threads``, which sets the calling thread's own team size, where torch runs its
    kernels on OpenMP (as its Linux builds do) and has it loaded globally; else None."""
    import ctypes

    import torch

    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        return ctypes.CDLL(None).omp_set_num_threads
    except (OSError, AttributeError):
        return None


def _has_gpu() -> bool:
    """Whether torch can use a GPU here; without a GPU driver it cannot, and torch is not even imported."""
    if not any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/kfd", "/dev/nvidia0")):
        return False
    import torch

    return torch.cuda.is_available()


def load_cnn14(path):
    """Build Cnn14 and load a checkpoint (``{"model": state_dict}`` as published, or a bare state dict)."""
    reason = None
    try:
        import torch

        from .cnn14 import Cnn14
    except ImportError as e:
        raise ModelNotAvailable(f"panns-cnn14 needs torch: {e}") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise ModelNotAvailable(f"no checkpoint at {path}; run: audiosim models fetch panns-cnn14") from e
    except Exception as e:  # torch raises many kinds for a corrupt or hostile file
        raise ModelNotAvailable(f"{path} is not a loadable checkpoint ({type(e).__name__}: {e})") from e
    state = state.get("model", state) if isinstance(state, dict) else None
    # Built without weights of its own, the model takes the checkpoint's tensors as they are: loading never holds
    # two copies of its 330 MB (the bfloat16 twin's load peaked at 1.06 GB with both).
    with torch.device("meta"):
        model = Cnn14()
    if state is None:
        reason = "it holds no state dict"
    else:
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            reason = str(e).splitlines()[0]
    if reason:
        raise ModelNotAvailable(f"{path} is not a Cnn14 checkpoint: {reason}")
    return model.eval()


def on_best_device(model):
    import torch

    return model.cuda() if torch.cuda.is_available() else model


@hookimpl
def register_embedders(register):
    register(PannsCnn14)
