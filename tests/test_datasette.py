"""The Datasette plugin through ``datasette.client``: pages, JSON twins, streaming, SQL functions, permissions."""

from __future__ import annotations

import io
import json
import shutil
import uuid

import pytest
import soundfile
from datasette.app import Datasette

from audiosim import Settings
from audiosim.service import AudioSim
from audiosim.synth import sound, write


@pytest.fixture
def catalog(tmp_path, corpus):
    """A catalog of the demo corpus plus a clip whose name carries HTML, indexed with the weightless model."""
    folder = tmp_path / "sounds"
    shutil.copytree(corpus, folder)
    write(folder / "tone" / "<script>alert(1)</script>.wav", sound("tone", 1.0, seed=42))
    path = tmp_path / "audiosim.db"
    with AudioSim(Settings(str(path), model="dsp-logmel")) as sim:
        report = sim.index([folder])
        assert not report.failed
    return path, folder


async def make_datasette(path, **kwargs) -> Datasette:
    ds = Datasette([str(path)], **kwargs)
    await ds.invoke_startup()
    return ds


def clip_id_of(path, name: str) -> int:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return conn.execute("select id from clips where path like ?", [f"%{name}"]).fetchone()[0]


def query_path(database: str) -> str:
    """Where a database's SQL query JSON lives: /db.json on Datasette 0.65, /db/-/query.json on 1.0."""
    import datasette

    return f"/{database}/-/query.json" if datasette.__version__.startswith("1.") else f"/{database}.json"


def root_cookies(ds) -> dict:
    return {"ds_actor": ds.sign({"a": {"id": "root"}}, "actor")}


def wav_bytes(kind="chirp", seconds=2.0, seed=101) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, sound(kind, seconds, seed=seed), 32000, format="WAV")
    return buffer.getvalue()


def multipart(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.asyncio
async def test_find_similar_page_and_json_twin(catalog):
    path, _ = catalog
    ds = await make_datasette(path)
    page = await ds.client.get("/-/audiosim")
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.text
    assert "26 clips" in page.text

    chirp = clip_id_of(path, "chirp-1.wav")
    html_results = await ds.client.get(f"/-/audiosim?clip={chirp}&k=3")
    assert html_results.status_code == 200 and html_results.text.count('class="audiosim-player"') == 3
    data = (await ds.client.get(f"/-/audiosim.json?clip={chirp}&k=3")).json()
    assert data["ok"] and data["query"]["clip_id"] == chirp and len(data["results"]) == 3
    first = data["results"][0]
    assert chirp not in [r["clip_id"] for r in data["results"]]
    assert first["audio_url"] == f"/-/audiosim/audio/{first['clip_id']}"
    assert first["similar_url"] == f"/-/audiosim?clip={first['clip_id']}"
    assert first["row_url"] == f"/audiosim/clips/{first['clip_id']}"
    assert {"score", "offset_s", "path", "duration_s", "tags"} <= set(first)
    hop = (await ds.client.get(first["similar_url"])).status_code  # click through sound after sound
    assert hop == 200


@pytest.mark.asyncio
async def test_filters_restrict_the_search_itself(catalog):
    path, folder = catalog
    ds = await make_datasette(path)
    tone = clip_id_of(path, "tone-1.wav")
    data = (await ds.client.get(f"/-/audiosim.json?clip={tone}&k=10&folder={folder / 'noise'}")).json()
    assert sorted(r["name"] for r in data["results"]) == [f"noise-{i}.wav" for i in range(1, 5)]
    data = (await ds.client.get(f"/-/audiosim.json?clip={tone}&k=10&min_duration=2.5&max_duration=3.5")).json()
    assert data["results"] and all(2.5 <= r["duration_s"] <= 3.5 for r in data["results"])
    assert data["filters"] == {"min_duration": 2.5, "max_duration": 3.5}


@pytest.mark.asyncio
async def test_search_by_upload_multipart_and_raw(catalog):
    path, folder = catalog
    ds = await make_datasette(path)
    original = (folder / "clicks" / "clicks-2.wav").read_bytes()
    body, content_type = multipart("audio", "mine.wav", original)
    response = await ds.client.post("/-/audiosim.json?k=2", content=body, headers={"content-type": content_type})
    data = response.json()
    assert response.status_code == 200 and data["query"] == {"upload": "mine.wav"}
    assert data["results"][0]["name"] == "clicks-2.wav" and data["results"][0]["score"] > 0.999
    page = await ds.client.post("/-/audiosim", content=body, headers={"content-type": content_type})
    assert page.status_code == 200 and "clicks-2.wav" in page.text
    raw = await ds.client.post("/-/audiosim.json", content=original, headers={"content-type": "audio/wav"})
    assert raw.json()["results"][0]["name"] == "clicks-2.wav"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "content,content_type,status,message",
    [
        (b"\x00" * (2 * 1024 * 1024), "audio/wav", 413, "larger than the 1 MB limit"),
        (b"this is not audio at all" * 40, "audio/wav", 400, "not a readable audio file"),
        (b"", "audio/wav", 400, "empty"),
        (b"k=3", "application/x-www-form-urlencoded", 400, "multipart/form-data"),
    ],
)
async def test_bad_uploads_are_refused(catalog, content, content_type, status, message):
    path, _ = catalog
    ds = await make_datasette(path, metadata={"plugins": {"datasette-audiosim": {"max_upload_mb": 1}}})
    response = await ds.client.post("/-/audiosim.json", content=content, headers={"content-type": content_type})
    assert response.status_code == status and message in response.json()["error"]


@pytest.mark.asyncio
async def test_too_long_upload_is_refused(catalog):
    path, _ = catalog
    ds = await make_datasette(path, metadata={"plugins": {"datasette-audiosim": {"max_upload_seconds": 1}}})
    response = await ds.client.post(
        "/-/audiosim.json", content=wav_bytes(seconds=3.0), headers={"content-type": "audio/wav"}
    )
    assert response.status_code == 400 and "the limit is 1 s" in response.json()["error"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "query,status,message",
    [
        ("clip=abc", 400, "clip must be a whole number"),
        ("clip=1&k=0", 400, "k must be between 1 and 100"),
        ("clip=1&k=100000", 400, "k must be between 1 and 100"),
        ("clip=999999", 404, "No clip with id 999999"),
        ("clip=1&min_duration=soon", 400, "min_duration must be a number"),
    ],
)
async def test_bad_parameters(catalog, query, status, message):
    ds = await make_datasette(catalog[0])
    response = await ds.client.get(f"/-/audiosim.json?{query}")
    assert response.status_code == status
    assert message in response.text


@pytest.mark.asyncio
async def test_audio_streams_with_ranges(catalog):
    path, folder = catalog
    ds = await make_datasette(path)
    clip = clip_id_of(path, "hum-1.wav")
    content = (folder / "hum" / "hum-1.wav").read_bytes()
    whole = await ds.client.get(f"/-/audiosim/audio/{clip}")
    assert whole.status_code == 200 and whole.content == content
    assert whole.headers["content-type"] == "audio/wav" and whole.headers["accept-ranges"] == "bytes"
    part = await ds.client.get(f"/-/audiosim/audio/{clip}", headers={"range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(content)}"
    tail = await ds.client.get(f"/-/audiosim/audio/{clip}", headers={"range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == content[-10:]
    beyond = await ds.client.get(f"/-/audiosim/audio/{clip}", headers={"range": f"bytes={len(content)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(content)}"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "url",
    [
        "/-/audiosim/audio/999999",
        "/-/audiosim/audio/../../etc/passwd",
        "/-/audiosim/audio/..%2f..%2fetc%2fpasswd",
        "/-/audiosim/audio/%2e%2e/%2e%2e/etc/passwd",
        "/-/audiosim/audio/%252e%252e%252fetc%252fpasswd",
        "/-/audiosim/audio//etc/passwd",
        "/-/audiosim/audio/1%00.wav",
        "/-/audiosim/audio/-1",
        "/-/audiosim/spectrogram/..%2f..%2fetc%2fpasswd.png",
        "/-/audiosim/spectrogram/%252e%252e%252fetc%252fpasswd.png",
        "/-/audiosim/spectrogram/999999.png",
    ],
)
async def test_only_catalogued_files_are_served(catalog, url):
    ds = await make_datasette(catalog[0])
    response = await ds.client.get(url, follow_redirects=True)  # Datasette may first normalise the path
    assert response.status_code == 404
    assert b"root:" not in response.content and not response.headers["content-type"].startswith("audio/")


@pytest.mark.asyncio
async def test_clips_table_has_players_links_and_escapes_names(catalog):
    path, _ = catalog
    ds = await make_datasette(path)
    page = await ds.client.get("/audiosim/clips")
    assert page.status_code == 200
    assert page.text.count('class="audiosim-similar"') >= 20 and "<audio controls" in page.text
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.wav" in page.text
    assert "Find similar audio" in page.text  # the table action


@pytest.mark.asyncio
async def test_sql_functions(catalog):
    path, _ = catalog
    ds = await make_datasette(path)
    chirp = clip_id_of(path, "chirp-1.wav")
    sql = f"select value ->> 0 as clip_id, value ->> 1 as score from json_each(audiosim_similar({chirp}, 4))"
    rows = (await ds.client.get(query_path("audiosim"), params={"sql": sql, "_shape": "array"})).json()
    assert len(rows) == 4 and chirp not in [r["clip_id"] for r in rows]
    assert rows == sorted(rows, key=lambda r: -r["score"])
    score = (
        await ds.client.get(
            query_path("audiosim"), params={"sql": f"select audiosim_score({chirp}, {chirp}) as s", "_shape": "array"}
        )
    ).json()
    assert score[0]["s"] == pytest.approx(1.0, abs=1e-4)
    other = rows[0]["clip_id"]
    pair = (
        await ds.client.get(
            query_path("audiosim"), params={"sql": f"select audiosim_score({chirp}, {other}) as s", "_shape": "array"}
        )
    ).json()
    assert pair[0]["s"] == pytest.approx(rows[0]["score"], abs=1e-4)
    for bad in [
        "audiosim_similar(999999, 3)",
        f"audiosim_similar({chirp}, 0)",
        "audiosim_similar('x', 3)",
        "audiosim_score(1, 999999)",
    ]:
        response = await ds.client.get(query_path("audiosim"), params={"sql": f"select {bad}"})
        assert response.status_code == 400 and not response.json()["ok"]


@pytest.mark.asyncio
async def test_viewing_follows_datasette_permissions(catalog):
    path, _ = catalog
    metadata = {"databases": {"audiosim": {"tables": {"clips": {"allow": {"id": "root"}}}}}}
    ds = await make_datasette(path, metadata=metadata)
    clip = clip_id_of(path, "tone-1.wav")
    for url in [f"/-/audiosim?clip={clip}", f"/-/audiosim.json?clip={clip}", f"/-/audiosim/audio/{clip}"]:
        assert (await ds.client.get(url)).status_code == 403, url
        cookies = root_cookies(ds)
        assert (await ds.client.get(url, cookies=cookies)).status_code == 200, url


@pytest.mark.asyncio
async def test_uploads_can_be_restricted(catalog):
    path, _ = catalog
    metadata = {"plugins": {"datasette-audiosim": {"allow_upload": {"id": "root"}}}}
    ds = await make_datasette(path, metadata=metadata)
    anonymous = await ds.client.post("/-/audiosim.json", content=wav_bytes(), headers={"content-type": "audio/wav"})
    assert anonymous.status_code == 403
    cookies = root_cookies(ds)
    root = await ds.client.post(
        "/-/audiosim.json", content=wav_bytes(), headers={"content-type": "audio/wav"}, cookies=cookies
    )
    assert root.status_code == 200


@pytest.mark.asyncio
async def test_no_catalog_means_no_pages(tmp_path):
    import sqlite3

    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).execute("create table t (id integer)").connection.close()
    ds = await make_datasette(plain)
    assert (await ds.client.get("/-/audiosim")).status_code == 404
    assert "Find similar audio" not in (await ds.client.get("/")).text
    assert json.loads((await ds.client.get(query_path("plain") + "?sql=select 1 as x&_shape=array")).text) == [{"x": 1}]


@pytest.mark.asyncio
async def test_the_model_engine_is_configurable_and_a_misspelt_one_is_refused(catalog):
    from datasette_audiosim.config import load_config

    path, _ = catalog
    for runtime, expected in (({}, "auto"), ({"runtime": "int8"}, "int8")):
        metadata = {"plugins": {"datasette-audiosim": runtime}}
        config = await load_config(Datasette([str(path)], metadata=metadata))
        assert config.settings.runtime == expected
    with pytest.raises(ValueError, match="'fast' is not one of: auto, torch, onnx, bfloat16, float32, int8"):
        await load_config(Datasette([str(path)], metadata={"plugins": {"datasette-audiosim": {"runtime": "fast"}}}))


@pytest.mark.asyncio
async def test_spectrogram_thumbnails(catalog):
    path, _ = catalog
    ds = await make_datasette(path)
    clip = clip_id_of(path, "chirp-2.wav")
    response = await ds.client.get(f"/-/audiosim/spectrogram/{clip}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    png = response.content
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    assert int.from_bytes(png[16:20], "big") == 240 and int.from_bytes(png[20:24], "big") == 48
    again = await ds.client.get(f"/-/audiosim/spectrogram/{clip}.png")
    assert again.content == png  # served from the cache, identical
    other = await ds.client.get(f"/-/audiosim/spectrogram/{clip_id_of(path, 'hum-1.wav')}.png")
    assert other.content != png
    assert (await ds.client.get("/-/audiosim/spectrogram/999999.png")).status_code == 404
    assert f"/-/audiosim/spectrogram/{clip}.png" in (await ds.client.get("/audiosim/clips")).text


@pytest.mark.asyncio
async def test_tags_with_markup_are_escaped_and_filterable(catalog):
    import sqlite3

    path, _ = catalog
    hum = clip_id_of(path, "hum-2.wav")
    hostile = '<img src=x onerror="alert(1)">'
    with sqlite3.connect(path) as conn:
        conn.execute("insert into tags (clip_id, tag, score, tag_rank) values (?, ?, 0.9, 1)", [hum, hostile])
        conn.execute("update clips set tags = ? where id = ?", [json.dumps([hostile]), hum])
    ds = await make_datasette(path)
    tone = clip_id_of(path, "tone-1.wav")
    page = await ds.client.get("/-/audiosim", params={"clip": tone, "k": 5, "tag": hostile})
    assert page.status_code == 200 and hostile not in page.text
    assert "&lt;img src=x onerror=" in page.text
    data = (await ds.client.get("/-/audiosim.json", params={"clip": tone, "tag": hostile})).json()
    assert [r["clip_id"] for r in data["results"]] == [hum] and data["results"][0]["tags"][0]["tag"] == hostile
    facets = (await ds.client.get("/audiosim/clips.json", params={"_facet_array": "tags"})).text
    assert "onerror" in facets  # the facet sees it (as data, JSON-escaped)
