"""Receive a query clip: a multipart form field or a raw request body, streamed to a temporary file with a size cap."""

from __future__ import annotations

import asyncio
import os

from python_multipart.multipart import MultipartParser, parse_options_header


class UploadTooLarge(Exception):
    pass


class NoUpload(Exception):
    pass


class UploadStalled(Exception):
    """The client stopped sending the body: a slow or abandoned upload must not hold a connection forever."""


IDLE_S = 20.0  # the longest pause allowed between two pieces of an upload


async def receive_upload(request, field: str, destination, max_bytes: int) -> str:
    """Write the uploaded file's bytes to ``destination`` (an open binary file); return its file name."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type == b"multipart/form-data":
        return await _receive_multipart(request, field, destination, max_bytes, options.get(b"boundary", b""))
    if content_type.startswith((b"audio/", b"video/")) or content_type == b"application/octet-stream":
        await _receive_raw(request, destination, max_bytes)
        return request.args.get("filename") or "upload"
    raise NoUpload("send the clip as multipart/form-data (field 'audio') or as a raw audio/* body")


async def _chunks(request, max_bytes: int):
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise UploadTooLarge()  # refused before a byte of it is read
    total = 0
    more = True
    while more:
        try:
            message = await asyncio.wait_for(request.receive(), IDLE_S)
        except asyncio.TimeoutError:
            raise UploadStalled() from None
        if message["type"] != "http.request":
            return
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > max_bytes:
            raise UploadTooLarge()
        more = message.get("more_body", False)
        yield chunk


async def _receive_raw(request, destination, max_bytes):
    written = 0
    async for chunk in _chunks(request, max_bytes):
        destination.write(chunk)
        written += len(chunk)
    if not written:
        raise NoUpload("the request body is empty")


async def _receive_multipart(request, field, destination, max_bytes, boundary):
    if not boundary:
        raise NoUpload("multipart body without a boundary")
    state = {"headers": {}, "name": None, "filename": None, "field": None, "value": b"", "found": False}

    def on_header_field(data, start, end):
        state["field"] = (state.get("field") or b"") + data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = None, b""

    def on_headers_finished():
        _, options = parse_options_header(state["headers"].get(b"content-disposition", b""))
        state["name"] = options.get(b"name", b"").decode("utf-8", "replace")
        state["filename"] = options.get(b"filename", b"").decode("utf-8", "replace") or None
        if state["name"] == field and state["filename"] is not None:
            state["found"] = True
            state["target"] = True
        else:
            state["target"] = False

    def on_part_data(data, start, end):
        if state.get("target"):
            destination.write(data[start:end])

    def on_part_begin():
        state["headers"] = {}

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    async for chunk in _chunks(request, max_bytes):
        parser.write(chunk)
    parser.finalize()
    if not state["found"] or destination.tell() == 0:
        raise NoUpload(f"no file in the form field '{field}'")
    return os.path.basename(state["filename"] or "upload")
