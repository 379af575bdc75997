"""Permission checks that work on Datasette 0.65 (``permission_allowed``) and 1.0 (``allowed`` with resources)."""

from __future__ import annotations

from datasette.utils import actor_matches_allow

from .config import PLUGIN


async def can_view_clips(datasette, actor, database: str | None) -> bool:
    if hasattr(datasette, "allowed"):  # Datasette 1.0
        from datasette.resources import DatabaseResource, TableResource

        if database is None:
            return await datasette.allowed(action="view-instance", actor=actor)
        return await datasette.allowed(
            action="view-table", resource=TableResource(database, "clips"), actor=actor
        ) and await datasette.allowed(action="view-database", resource=DatabaseResource(database), actor=actor)
    if database is None:
        return await datasette.permission_allowed(actor, "view-instance", default=True)
    return await datasette.permission_allowed(
        actor, "view-table", resource=(database, "clips"), default=True
    ) and await datasette.permission_allowed(actor, "view-database", resource=database, default=True)


async def can_upload(datasette, actor) -> bool:
    """Searching by an uploaded clip is open to everyone unless the plugin's ``allow_upload`` setting says
    otherwise: ``false``, or an allow block such as ``{"id": "root"}``."""
    config = datasette.plugin_config(PLUGIN) or {}
    allow = config.get("allow_upload", True)
    if isinstance(allow, bool):
        return allow
    return actor_matches_allow(actor, allow)
