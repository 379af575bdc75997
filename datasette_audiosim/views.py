"""The plugin's pages: find similar (by catalog clip or uploaded file, HTML and JSON) and audio streaming."""

from __future__ import annotations

import os
import tempfile

from datasette.utils.asgi import Forbidden, NotFound, Response

from audiosim import AudioSimError, ClipNotFound, DecodeError
from audiosim.decode import probe

from .compat import can_upload, can_view_clips
from .spectrogram import spectrogram_png
from .state import holder_for
from .streaming import send_file
from .uploads import IDLE_S as UPLOAD_IDLE_S
from .uploads import NoUpload, UploadStalled, UploadTooLarge, receive_upload


class BadRequest(Exception):
    """Rendered as a 400 page or JSON error."""


class PayloadTooLarge(Exception):
    """Rendered as a 413 page or JSON error."""


class RequestTimeout(Exception):
    """Rendered as a 408 page or JSON error."""


async def _holder_or_404(datasette):
    holder = await holder_for(datasette)
    if holder is None:
        raise NotFound("No audiosim catalog is served here: run audiosim index, then datasette audiosim.db")
    return holder


async def check_view(datasette, request, holder) -> None:
    """Viewing follows Datasette's own permissions on the catalog's clips table."""
    if not await can_view_clips(datasette, request.actor, holder.config.database):
        raise Forbidden("You do not have permission to view this audio catalog")


def _int_arg(request, name, default, low, high) -> int:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def _float_arg(request, name) -> float | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number of seconds, not {raw!r}") from None


def filters_from(request) -> dict:
    return {
        "tag": request.args.get("tag") or None,
        "min_duration": _float_arg(request, "min_duration"),
        "max_duration": _float_arg(request, "max_duration"),
        "folder": request.args.get("folder") or None,
    }


def allowed_clip_ids(service, filters: dict) -> list[int] | None:
    """The clips the filters allow (None: no filter), computed in the catalog so the search itself is restricted
    to them: never post-filtering that silently returns fewer than k results."""
    if not any(v is not None for v in filters.values()):
        return None
    return service.catalog.filter_clip_ids(**filters)


def match_dict(datasette, holder, service, match) -> dict:
    clip = match.clip
    database = holder.config.database
    return {
        **match.to_dict(),
        "name": os.path.basename(clip.path),
        "format": clip.format,
        "tags": [{"tag": t, "score": round(s, 4)} for t, s in service.catalog.tags(clip.id)],
        "audio_url": datasette.urls.path(f"/-/audiosim/audio/{clip.id}"),
        "spectrogram_url": datasette.urls.path(f"/-/audiosim/spectrogram/{clip.id}.png"),
        "similar_url": datasette.urls.path(f"/-/audiosim?clip={clip.id}"),
        "row_url": datasette.urls.row(database, "clips", str(clip.id)) if database else None,
    }


async def find_similar(datasette, request):
    """GET /-/audiosim[.json]?clip=ID&k=&tag=&min_duration=&max_duration=&folder=, or POST an upload."""
    as_json = request.url_vars.get("format") == "json"
    try:
        holder = await _holder_or_404(datasette)
        await check_view(datasette, request, holder)
        context = await _find_similar(datasette, request, holder)
        status = 200
    except (BadRequest, PayloadTooLarge, RequestTimeout, AudioSimError) as e:
        # AudioSimError here is the vector store or model being unavailable: say so instead of a bare 500.
        status = (
            413
            if isinstance(e, PayloadTooLarge)
            else 408
            if isinstance(e, RequestTimeout)
            else 400
            if isinstance(e, BadRequest)
            else 503
        )
        if as_json:
            return Response.json({"ok": False, "error": str(e)}, status=status)
        context = {"error": str(e), "results": None, "query": None, "filters": {}, "k": 10}
        holder = await holder_for(datasette)
    if as_json:
        return Response.json(
            {
                "ok": True,
                "query": context["query"],
                "k": context["k"],
                "filters": context["filters"],
                "results": context["results"],
            }
        )
    stats = await holder.run(lambda s: s.catalog.stats()) if holder else {}
    html = await datasette.render_template(
        "audiosim_similar.html",
        {
            **context,
            "stats": stats,
            "database": holder.config.database if holder else None,
            "max_upload_mb": holder.config.max_upload_bytes // (1024 * 1024) if holder else 0,
        },
        request=request,
    )
    return Response.html(html, status=status)


async def _find_similar(datasette, request, holder) -> dict:
    k = _int_arg(request, "k", 10, 1, holder.config.max_k)
    filters = filters_from(request)
    shown_filters = {key: value for key, value in filters.items() if value is not None}
    if request.method == "POST":
        if not await can_upload(datasette, request.actor):
            raise Forbidden("You do not have permission to search by upload")
        query, matches = await _search_upload(request, holder, k, filters)
    elif request.args.get("clip"):
        clip_id = _int_arg(request, "clip", 0, 1, 2**62)

        def similar(service):
            try:
                clip = service.catalog.clip(clip_id)
            except ClipNotFound as e:
                raise NotFound(str(e)) from e
            ids = allowed_clip_ids(service, filters)
            return {"clip_id": clip.id, "path": clip.path, "name": os.path.basename(clip.path)}, service.similar(
                clip_id, k, clip_ids=ids
            )

        query, matches = await holder.run(similar)
        query["audio_url"] = datasette.urls.path(f"/-/audiosim/audio/{clip_id}")
    else:
        return {"query": None, "results": None, "k": k, "filters": shown_filters}
    results = await holder.run(lambda s: [match_dict(datasette, holder, s, m) for m in matches])
    return {"query": query, "results": results, "k": k, "filters": shown_filters}


async def _search_upload(request, holder, k, filters):
    config = holder.config
    with tempfile.TemporaryDirectory(prefix="audiosim-upload-") as tmp:
        path = os.path.join(tmp, "query")
        with open(path, "wb") as f:
            try:
                name = await receive_upload(request, "audio", f, config.max_upload_bytes)
            except UploadTooLarge:
                raise PayloadTooLarge(
                    f"The upload is larger than the {config.max_upload_bytes // (1024 * 1024)} MB limit"
                ) from None
            except NoUpload as e:
                raise BadRequest(str(e)) from None
            except UploadStalled:
                raise RequestTimeout(f"The upload stalled: nothing arrived for {UPLOAD_IDLE_S:.0f} s") from None

        def search(service):
            try:
                info = probe(path)
                if info.duration_s > config.max_upload_s:
                    raise BadRequest(
                        f"The upload is {info.duration_s:.0f} s long; the limit is {config.max_upload_s:.0f} s"
                    )
                ids = allowed_clip_ids(service, filters)
                return service.search_file(path, k, clip_ids=ids)
            except DecodeError as e:
                raise BadRequest(f"{name}: not a readable audio file") from e

        matches = await holder.run(search)
    return {"upload": name}, matches


async def spectrogram(datasette, request):
    """GET /-/audiosim/spectrogram/ID.png: a thumbnail of the catalogued file of clip ID."""
    holder = await _holder_or_404(datasette)
    await check_view(datasette, request, holder)
    clip = await _catalogued_clip(holder, request)

    def draw(service):
        key = (clip.id, clip.content_hash)
        cached = holder.thumbnails.get(key)
        if cached is None:
            try:
                cached = spectrogram_png(clip.fs_path)
            except DecodeError:
                raise NotFound("This clip's file can no longer be decoded") from None
            holder.thumbnails.put(key, cached)
        return cached

    png = await holder.run(draw)
    return Response(png, content_type="image/png", headers={"cache-control": "private, max-age=86400"})


async def _catalogued_clip(holder, request):
    try:
        clip_id = int(request.url_vars["clip_id"])
        clip = await holder.run(lambda s: s.catalog.clip(clip_id))
    except (ValueError, ClipNotFound):
        raise NotFound("No such clip") from None
    if not os.path.isfile(clip.fs_path):
        raise NotFound("The file of this clip is missing; run audiosim verify")
    return clip


async def stream_audio(datasette, request, send):
    """GET /-/audiosim/audio/ID: the catalogued file of clip ID, never a path taken from the request."""
    holder = await _holder_or_404(datasette)
    await check_view(datasette, request, holder)
    clip = await _catalogued_clip(holder, request)
    await send_file(send, clip.fs_path, request.headers.get("range"), {"cache-control": "private, max-age=3600"})


__all__ = ["find_similar", "stream_audio"]
