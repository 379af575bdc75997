"""Datasette plugin: find-similar pages, inline players and SQL functions over an audiosim catalog."""

from __future__ import annotations

import html
import os

from datasette import hookimpl
from markupsafe import Markup

from . import sqlfunctions
from .state import cached_holder, holder_for
from .views import find_similar, spectrogram, stream_audio


@hookimpl
def register_routes():
    return [
        (r"^/-/audiosim(\.(?P<format>json))?$", find_similar),
        (r"^/-/audiosim/audio/(?P<clip_id>[0-9]+)$", stream_audio),
        (r"^/-/audiosim/spectrogram/(?P<clip_id>[0-9]+)\.png$", spectrogram),
    ]


@hookimpl
def startup(datasette):
    async def inner():
        await holder_for(datasette)  # find the catalog once, so SQL functions and cells know it

    return inner


@hookimpl
def skip_csrf(scope):
    # Searching by upload changes nothing, and scripts post clips with curl: no CSRF token needed there.
    return scope["path"] in ("/-/audiosim", "/-/audiosim.json")


@hookimpl
def prepare_connection(conn, database, datasette):
    # Connections can be made before startup has found the catalog, so the functions find it when called.
    def holder():
        found = cached_holder(datasette)
        if found is None or found.config.database != database:
            raise ValueError("audiosim functions only work on the database that holds the audiosim catalog")
        return found

    for name, (fn, arity) in sqlfunctions.make_functions(holder).items():
        conn.create_function(name, arity, fn)


@hookimpl
def render_cell(row, value, column, table, database, datasette):
    holder = cached_holder(datasette)
    if holder is None or database != holder.config.database or table != "clips" or column != "path":
        return None
    try:
        clip_id = int(row["id"])
        status = row["status"]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    if status != "ready":
        return None
    audio = datasette.urls.path(f"/-/audiosim/audio/{clip_id}")
    picture = datasette.urls.path(f"/-/audiosim/spectrogram/{clip_id}.png")
    similar = datasette.urls.path(f"/-/audiosim?clip={clip_id}")
    name = os.path.basename(str(value))
    return Markup(
        f'<div class="audiosim-cell"><span title="{html.escape(str(value))}">{html.escape(name)}</span><br>'
        f'<img src="{picture}" alt="spectrogram" width="240" height="48" loading="lazy"><br>'
        f'<audio controls preload="none" src="{audio}"></audio><br>'
        f'<a class="audiosim-similar" href="{similar}">Find similar</a></div>'
    )


@hookimpl
def menu_links(datasette):
    if cached_holder(datasette) is None:
        return None
    return [{"href": datasette.urls.path("/-/audiosim"), "label": "Find similar audio"}]


@hookimpl
def table_actions(datasette, database, table):
    holder = cached_holder(datasette)
    if holder is None or database != holder.config.database or table != "clips":
        return None
    return [{"href": datasette.urls.path("/-/audiosim"), "label": "Find similar audio"}]
