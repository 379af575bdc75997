"""Choosing an embedder: by name, by what a catalog was built with, or the best one usable here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .catalog import Collection
from .embedders import Embedder
from .errors import ModelMismatch, ModelNotAvailable
from .plugins import embedder_classes


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    name: str
    version: str
    dim: int
    sample_rate: int
    description: str
    problem: str | None  # None when usable

    @property
    def usable(self) -> bool:
        return self.problem is None


def model_statuses(model_dir: Path) -> list[ModelStatus]:
    statuses = []
    for cls in embedder_classes().values():
        embedder = cls(model_dir=model_dir)
        statuses.append(
            ModelStatus(cls.name, cls.version, cls.dim, cls.sample_rate, cls.description, embedder.unavailable_reason())
        )
    return statuses


def default_model_name(model_dir: Path) -> str:
    """The first usable embedder in preference order: panns-cnn14, then aisfx, then the DSP one."""
    for status in model_statuses(model_dir):
        if status.usable:
            return status.name
    raise ModelNotAvailable("No embedder is usable here; run: audiosim models")


def choose_embedder(
    requested: str | None,
    collection: Collection | None,
    model_dir: Path,
    batch_size: int = 16,
    runtime: str = "auto",
    hop_s: float | None = None,
):
    """The embedder to use with a catalog: the requested one (which must match the catalog's), else the
    catalog's own, else the best usable one. It cuts windows at the catalog's hop, else at ``hop_s``, else
    at the model's default."""
    classes = embedder_classes()
    if requested and requested not in classes:
        raise ModelNotAvailable(f"Unknown model {requested!r}; known models: {', '.join(classes)}")
    if requested and collection and requested != collection.model:
        raise ModelMismatch(
            f"This catalog was built with {collection.identity}; it cannot be searched or extended with "
            f"{requested}. Use --model {collection.model}, or a new --catalog for {requested}."
        )
    name = requested or (collection.model if collection else default_model_name(model_dir))
    if name not in classes:  # the catalog's model came from a plugin that is no longer installed
        raise ModelNotAvailable(f"This catalog was built with {name}, which is not installed here")
    embedder: Embedder = classes[name](model_dir=model_dir, batch_size=batch_size, runtime=runtime)
    if collection and (embedder.version != collection.model_version or embedder.dim != collection.dim):
        raise ModelMismatch(
            f"This catalog was built with {collection.identity}, but the installed {name} is {embedder.identity}: "
            "vectors from different versions cannot be mixed. Re-index into a new --catalog."
        )
    embedder.hop_s = _hop(embedder, collection, hop_s)
    problem = embedder.unavailable_reason()
    if problem:
        raise ModelNotAvailable(f"{name}: {problem}")
    return embedder


def _hop(embedder: Embedder, collection: Collection | None, requested: float | None) -> float:
    if collection is not None:
        if requested is not None and abs(requested - collection.hop_s) > 1e-9:
            raise ModelMismatch(
                f"This catalog cuts a window every {collection.hop_s:g} s; it cannot be extended at a "
                f"{requested:g} s hop. Leave out --hop, or use a new --catalog."
            )
        return collection.hop_s
    if requested is None:
        return embedder.hop_s
    if not 0 < requested <= embedder.window_s:
        # A hop longer than the window would leave audio that no vector covers.
        raise ModelMismatch(
            f"{embedder.name} embeds {embedder.window_s:g} s windows; the hop must be more than 0 and at most "
            f"{embedder.window_s:g} s, not {requested:g}"
        )
    return float(requested)
