"""PANNs Cnn14: 2048-d embeddings plus AudioSet tags, from the official checkpoint in ``model_dir``."""

from __future__ import annotations

import threading

import numpy as np

from ..errors import ModelNotAvailable
from ..hookspecs import hookimpl
from ..labels import audioset_labels
from ..weights import CHECKPOINTS
from . import Embedder


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
                self._model = load_cnn14(self.checkpoint_path)
        return self._model

    def embed_batch(self, batch):
        import torch

        model = self.load()
        with torch.inference_mode():
            embedding, scores = model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        return embedding.numpy(), scores.numpy()


def load_cnn14(path):
    """Build Cnn14 and load a checkpoint (``{"model": state_dict}`` as published, or a bare state dict)."""
    reason = None
    try:
        import torch

        from .cnn14 import Cnn14
    except ImportError as e:
        raise ModelNotAvailable(f"panns-cnn14 needs torch and torchlibrosa: {e}") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise ModelNotAvailable(f"no checkpoint at {path}; run: audiosim models fetch panns-cnn14") from e
    except Exception as e:  # torch raises many kinds for a corrupt or hostile file
        raise ModelNotAvailable(f"{path} is not a loadable checkpoint ({type(e).__name__}: {e})") from e
    state = state.get("model", state) if isinstance(state, dict) else None
    model = Cnn14()
    if state is None:
        reason = "it holds no state dict"
    else:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            reason = str(e).splitlines()[0]
    if reason:
        raise ModelNotAvailable(f"{path} is not a Cnn14 checkpoint: {reason}")
    return model.eval()


@hookimpl
def register_embedders(register):
    register(PannsCnn14)
