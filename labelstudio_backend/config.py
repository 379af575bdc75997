"""The backend's settings, read from environment variables in one place (the core never reads them)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from audiosim import Settings


@dataclasses.dataclass(frozen=True)
class BackendConfig:
    settings: Settings
    label_studio_url: str | None = None
    api_key: str | None = None
    basic_auth: tuple[str, str] | None = None
    local_files_root: Path | None = None
    cache_dir: Path = dataclasses.field(default_factory=lambda: Path.home() / ".cache" / "audiosim" / "labelstudio")
    neighbours: int = 10

    @classmethod
    def from_env(cls, env=os.environ) -> BackendConfig:
        settings = Settings(
            catalog=env.get("AUDIOSIM_CATALOG", "audiosim.db"),
            milvus=env.get("AUDIOSIM_MILVUS") or None,
            milvus_token=env.get("AUDIOSIM_MILVUS_TOKEN") or None,
            model=env.get("AUDIOSIM_MODEL") or None,
            runtime=env.get("AUDIOSIM_RUNTIME") or "auto",
            hop_s=_seconds(env, "AUDIOSIM_HOP"),
            **({"model_dir": Path(env["AUDIOSIM_MODEL_DIR"])} if env.get("AUDIOSIM_MODEL_DIR") else {}),
        )
        user, password = env.get("BASIC_AUTH_USER"), env.get("BASIC_AUTH_PASS")
        root = env.get("LOCAL_FILES_DOCUMENT_ROOT")
        return cls(
            settings=settings,
            label_studio_url=(env.get("LABEL_STUDIO_URL") or "").rstrip("/") or None,
            api_key=env.get("LABEL_STUDIO_API_KEY") or None,
            basic_auth=(user, password) if user and password else None,
            local_files_root=Path(root) if root else None,
            **({"cache_dir": Path(env["AUDIOSIM_CACHE_DIR"])} if env.get("AUDIOSIM_CACHE_DIR") else {}),
        )


def _seconds(env, name: str) -> float | None:
    value = env.get(name)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {value!r}") from None
