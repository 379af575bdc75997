"""Explicit settings for the core. Adapters and the CLI build them; the core never reads the environment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

DEFAULT_CATALOG = "audiosim.db"
RUNTIMES = ("auto", "torch", "onnx", "bfloat16", "float32", "int8")  # engines for neural models; see embedders.panns


def default_milvus_for(catalog: str) -> str:
    """The embedded default: a Milvus Lite store beside a SQLite catalog (or in the working directory for MySQL)."""
    if is_mysql_url(catalog):
        return "audiosim-vectors.db"
    path = Path(catalog)
    return str(path.with_name(path.stem + "-vectors.db"))


def is_mysql_url(catalog: str) -> bool:
    return catalog.startswith(("mysql://", "mysql+pymysql://", "mariadb://"))


def is_milvus_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))


@dataclasses.dataclass(frozen=True)
class Settings:
    catalog: str = DEFAULT_CATALOG
    milvus: str | None = None  # None: a Milvus Lite store beside the catalog
    milvus_token: str | None = None
    model: str | None = None  # None: the catalog's model, else the best usable one
    model_dir: Path = dataclasses.field(default_factory=lambda: Path.home() / "panns_data")
    batch_size: int = 16
    runtime: str = "auto"  # one of RUNTIMES
    hop_s: float | None = None  # seconds between window starts in a new catalog; None: the model's default

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime {self.runtime!r} is not one of: {', '.join(RUNTIMES)}")
        if self.hop_s is not None and not self.hop_s > 0:
            raise ValueError(f"hop_s must be more than 0 seconds, not {self.hop_s!r}")

    @property
    def milvus_uri(self) -> str:
        return self.milvus or default_milvus_for(self.catalog)
