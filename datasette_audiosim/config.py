"""Plugin configuration: which database is the catalog, where the vectors are, and the upload limits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from audiosim import Settings

PLUGIN = "datasette-audiosim"
CATALOG_TABLES = {"clips", "segments", "collections", "audiosim_meta"}


@dataclasses.dataclass(frozen=True)
class PluginConfig:
    database: str | None  # the Datasette database holding the catalog (None when it lives in MySQL)
    settings: Settings
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_s: float = 120.0
    max_k: int = 100


async def catalog_database(datasette) -> str | None:
    """The first served database that holds an audiosim catalog, or the one the config names."""
    named = (datasette.plugin_config(PLUGIN) or {}).get("database")
    if named:
        return named if named in datasette.databases else None
    for name, db in datasette.databases.items():
        if db.is_memory or not db.path:
            continue
        if CATALOG_TABLES <= set(await db.table_names()):
            return name
    return None


async def load_config(datasette) -> PluginConfig | None:
    """Settings from ``plugins: datasette-audiosim:`` (Datasette resolves ``$env`` there), with zero-config
    defaults when a served database already is a catalog. None when there is no catalog to serve."""
    raw = datasette.plugin_config(PLUGIN) or {}
    database = await catalog_database(datasette)
    catalog = raw.get("catalog")
    if not catalog:
        if database is None:
            return None
        catalog = str(datasette.databases[database].path)
    model_dir = raw.get("model_dir")
    settings = Settings(
        catalog=catalog,
        milvus=raw.get("milvus") or None,
        milvus_token=raw.get("milvus_token") or None,
        model=raw.get("model") or None,
        runtime=raw.get("runtime") or "auto",
        **({"model_dir": Path(model_dir).expanduser()} if model_dir else {}),
    )
    return PluginConfig(
        database=database,
        settings=settings,
        max_upload_bytes=int(float(raw.get("max_upload_mb", 20)) * 1024 * 1024),
        max_upload_s=float(raw.get("max_upload_seconds", 120)),
        max_k=int(raw.get("max_k", 100)),
    )
