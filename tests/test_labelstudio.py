"""The Label Studio ML backend through label-studio-ml's Flask app (``test_client``), with task JSON as Label
Studio sends it, a real catalog, Milvus Lite and generated audio."""

from __future__ import annotations

import base64

import pytest

from audiosim import Settings
from audiosim.synth import sound, write
from labelstudio_backend.app import create_app
from labelstudio_backend.config import BackendConfig

KINDS = ["tone", "noise", "chirp", "clicks"]
CONFIG = """<View>
  <Audio name="audio" value="$audio"/>
  <Choices name="label" toName="audio" choice="single">
    <Choice value="tone"/><Choice value="noise"/><Choice value="chirp"/><Choice value="clicks"/>
  </Choices>
  <TextArea name="similar_clips" toName="audio" editable="false"/>
</View>"""
PROJECT = "3.1732000000"


@pytest.fixture
def tasks(tmp_path):
    """Five clips of each kind, as Label Studio tasks: local-storage URLs under a document root."""
    root = tmp_path / "files"
    out = []
    for k, kind in enumerate(KINDS):
        for i in range(5):
            write(root / "audio" / f"{kind}-{i}.wav", sound(kind, 1.5 + 0.3 * i, seed=10 * k + i))
            out.append(
                {
                    "id": 100 + 10 * k + i,
                    "data": {"audio": f"/data/local-files/?d=audio/{kind}-{i}.wav"},
                    "annotations": [],
                    "predictions": [],
                    "project": 3,
                    "kind": kind,
                }
            )
    return root, out


def backend_config(tmp_path, root, model: str = "aisfx") -> BackendConfig:
    """A backend over a fresh catalog and Lite store in ``tmp_path``, serving task files from ``root``."""
    return BackendConfig(
        settings=Settings(str(tmp_path / "c.db"), str(tmp_path / "v.db"), model=model),
        local_files_root=root,
        cache_dir=tmp_path / "cache",
    )


@pytest.fixture
def client(tmp_path, tasks):
    root, _ = tasks
    app = create_app(backend_config(tmp_path, root))
    yield app.test_client()
    app.config["AUDIOSIM_LABELER"].close()


def annotate(client, task, label, annotation_id, action="ANNOTATION_CREATED"):
    body = {
        "action": action,
        "annotation": {
            "id": annotation_id,
            "task": task["id"],
            "result": [{"from_name": "label", "to_name": "audio", "type": "choices", "value": {"choices": [label]}}],
        },
        "task": {k: v for k, v in task.items() if k != "kind"},
        "project": {"id": 3, "label_config": CONFIG},
    }
    response = client.post("/webhook", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)


def predict(client, tasks):
    response = client.post(
        "/predict",
        json={
            "tasks": [{k: v for k, v in t.items() if k != "kind"} for t in tasks],
            "project": PROJECT,
            "label_config": CONFIG,
            "params": {"login": None, "password": None, "context": None},
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["results"]


def choice(prediction):
    for item in prediction["result"]:
        if item["type"] == "choices":
            return item["value"]["choices"][0]
    return None


def test_health_setup_and_versions(client):
    assert client.get("/health").status_code == 200
    version = client.post(
        "/setup",
        json={
            "project": PROJECT,
            "schema": CONFIG,
            "hostname": "http://localhost:8080",
            "access_token": "abc",
            "extra_params": None,
        },
    ).get_json()["model_version"]
    assert version.startswith("audiosim-aisfx-v1-")
    assert client.get("/versions?project=3").get_json() == {"versions": [version]}
    assert client.post("/versions", json={"project": PROJECT}).get_json() == {"versions": [version]}


def test_nothing_labelled_gives_no_guess_but_shows_neighbours(client, tasks):
    _, all_tasks = tasks
    results = predict(client, all_tasks[:3])
    assert len(results) == 3
    for prediction in results:
        assert choice(prediction) is None  # no labels, no matching tags: no prediction rather than a guess
        assert len(prediction["neighbors"]) >= 1
        text = [r for r in prediction["result"] if r["type"] == "textarea"]
        assert text and text[0]["from_name"] == "similar_clips" and text[0]["value"]["text"]


def test_suggests_the_label_of_the_nearest_labelled_clips_and_learns(client, tasks):
    _, all_tasks = tasks
    before = client.post("/setup", json={"project": PROJECT, "schema": CONFIG}).get_json()["model_version"]
    annotation = 1
    for kind in KINDS:
        for task in [t for t in all_tasks if t["kind"] == kind][:2]:
            annotate(client, task, kind, annotation)
            annotation += 1
    after = client.post("/setup", json={"project": PROJECT, "schema": CONFIG}).get_json()["model_version"]
    assert after != before  # the label state is part of the version
    assert client.post("/setup", json={"project": PROJECT, "schema": CONFIG}).get_json()["model_version"] == after

    unlabelled = [t for t in all_tasks if int(str(t["id"])[-1]) >= 2]
    results = predict(client, unlabelled)
    assert [choice(p) for p in results] == [t["kind"] for t in unlabelled]
    assert all(0 < p["score"] <= 1 and p["model_version"] == after for p in results)
    neighbour_tasks = {n["task_id"] for p in results for n in p["neighbors"]}
    assert neighbour_tasks & {t["id"] for t in all_tasks}  # neighbours are named by task id

    # Relabel: an update replaces what the annotation said.
    tone_tasks = [t for t in all_tasks if t["kind"] == "tone"]
    annotate(client, tone_tasks[0], "noise", 1, action="ANNOTATION_UPDATED")
    annotate(client, tone_tasks[1], "noise", 2, action="ANNOTATION_UPDATED")
    assert choice(predict(client, tone_tasks[2:3])[0]) != "tone"

    # Deleting the annotations that taught "chirp" changes chirp suggestions at once.
    chirp_ids = [5, 6]
    response = client.post(
        "/webhook",
        json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": i} for i in chirp_ids], "project": {"id": 3}},
    )
    assert response.status_code == 201
    assert choice(predict(client, [t for t in all_tasks if t["kind"] == "chirp"][2:3])[0]) != "chirp"


def test_a_task_that_cannot_be_fetched_gets_no_prediction_and_the_batch_goes_on(client, tasks, tmp_path):
    root, all_tasks = tasks
    (root / "audio" / "broken.wav").write_bytes(b"RIFF garbage")
    bad = [
        {"id": 900, "data": {"audio": "/data/local-files/?d=audio/broken.wav"}},
        {"id": 901, "data": {"audio": "/data/local-files/?d=../../../../etc/passwd"}},
        {"id": 902, "data": {"audio": "http://127.0.0.1:9/nothing.wav"}},
        {"id": 903, "data": {}},
    ]
    annotate(client, all_tasks[0], "tone", 1)
    results = predict(client, bad + all_tasks[1:2])
    assert [p["result"] for p in results[:4]] == [[], [], [], []]
    assert choice(results[4]) == "tone"


def test_start_training_without_label_studio_says_what_is_missing(client):
    response = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3, "label_config": CONFIG}})
    assert response.status_code == 500 and "LABEL_STUDIO_URL" in response.get_json()["error"]


def test_basic_auth(tmp_path, tasks):
    root, _ = tasks
    config = BackendConfig(
        settings=Settings(str(tmp_path / "a.db"), str(tmp_path / "a-v.db"), model="dsp-logmel"),
        basic_auth=("ls", "s3cret"),
        local_files_root=root,
        cache_dir=tmp_path / "cache",
    )
    app = create_app(config)
    client = app.test_client()
    assert client.get("/health").status_code == 401
    assert client.post("/predict", json={"tasks": []}).status_code == 401
    good = {"Authorization": "Basic " + base64.b64encode(b"ls:s3cret").decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ls:nope").decode()}
    assert client.get("/health", headers=wrong).status_code == 401
    assert client.get("/health", headers=good).status_code == 200
    app.config["AUDIOSIM_LABELER"].close()


def test_config_from_environment(tmp_path):
    config = BackendConfig.from_env(
        {
            "AUDIOSIM_CATALOG": str(tmp_path / "x.db"),
            "AUDIOSIM_MILVUS": "http://milvus:19530",
            "AUDIOSIM_MODEL": "aisfx",
            "LABEL_STUDIO_URL": "http://ls:8080/",
            "LABEL_STUDIO_API_KEY": "k",
            "BASIC_AUTH_USER": "u",
            "BASIC_AUTH_PASS": "p",
            "LOCAL_FILES_DOCUMENT_ROOT": "/data",
            "AUDIOSIM_HOP": "2",
        }
    )
    assert config.settings.milvus_uri == "http://milvus:19530" and config.settings.model == "aisfx"
    assert config.settings.hop_s == 2.0 and BackendConfig.from_env({}).settings.hop_s is None
    assert config.label_studio_url == "http://ls:8080" and config.basic_auth == ("u", "p")
    assert str(config.local_files_root) == "/data"


@pytest.mark.parametrize(
    "hop,message", [("two", "AUDIOSIM_HOP must be a number of seconds, not 'two'"), ("0", "more than 0")]
)
def test_a_bad_hop_in_the_environment_is_refused_at_start(hop, message):
    with pytest.raises(ValueError, match=message):
        BackendConfig.from_env({"AUDIOSIM_HOP": hop})


LABELS_CONFIG = """<View>
  <Labels name="kind" toName="audio"><Label value="tone"/><Label value="noise"/></Labels>
  <Audio name="audio" value="$audio"/>
</View>"""


def test_labels_config_gets_a_region_over_the_whole_clip(client, tasks):
    _, all_tasks = tasks
    tone, noise = [t for t in all_tasks if t["kind"] == "tone"], [t for t in all_tasks if t["kind"] == "noise"]
    for annotation_id, task in enumerate(tone[:2] + noise[:2], 1):
        label = task["kind"]
        body = {
            "action": "ANNOTATION_CREATED",
            "annotation": {
                "id": annotation_id,
                "result": [
                    {
                        "from_name": "kind",
                        "to_name": "audio",
                        "type": "labels",
                        "value": {"start": 0.1, "end": 0.9, "labels": [label]},
                    }
                ],
            },
            "task": {"id": task["id"], "data": task["data"]},
            "project": {"id": 3, "label_config": LABELS_CONFIG},
        }
        assert client.post("/webhook", json=body).status_code == 201
    response = client.post(
        "/predict",
        json={
            "tasks": [{"id": tone[3]["id"], "data": tone[3]["data"]}],
            "project": PROJECT,
            "label_config": LABELS_CONFIG,
        },
    )
    (region,) = response.get_json()["results"][0]["result"]
    assert region["type"] == "labels" and region["value"]["labels"] == ["tone"]
    assert region["value"]["start"] == 0.0 and region["value"]["end"] == pytest.approx(1.5 + 0.3 * 3, abs=0.01)


def test_label_studio_urls_are_downloaded_with_the_token(tmp_path):
    """/data/upload/ audio comes from Label Studio over HTTP with the API token (a local server stands in)."""
    import http.server
    import threading

    wav = write(tmp_path / "srv" / "x.wav", sound("chirp", 2.0, seed=3)).read_bytes()
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            if self.headers.get("Authorization") != "Token tok123":
                self.send_error(401)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(wav)))
            self.end_headers()
            self.wfile.write(wav)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        config = BackendConfig(
            settings=Settings(str(tmp_path / "d.db"), str(tmp_path / "d-v.db"), model="dsp-logmel"),
            label_studio_url=url,
            api_key="tok123",
            cache_dir=tmp_path / "cache",
        )
        app = create_app(config)
        response = app.test_client().post(
            "/predict",
            json={
                "tasks": [{"id": 1, "data": {"audio": "/data/upload/1/abc-x.wav"}}],
                "project": PROJECT,
                "label_config": CONFIG,
            },
        )
        assert response.status_code == 200 and response.get_json()["results"][0]["model_version"]
        assert seen[0] == ("/data/upload/1/abc-x.wav", "Token tok123")
        assert list((tmp_path / "cache").glob("*.wav"))  # cached for the next prediction
        app.config["AUDIOSIM_LABELER"].close()
    finally:
        server.shutdown()


def test_before_any_label_audioset_tags_that_match_a_choice_are_suggested(tmp_path, tasks, panns_model_dir):
    """Nothing labelled yet: the model's AudioSet tags stand in when one matches a choice name, compared
    case-insensitively and singular/plural ("Speech" tag -> "speeches" choice)."""
    from audiosim.service import AudioSim

    root, all_tasks = tasks
    settings = Settings(
        str(tmp_path / "t.db"), str(tmp_path / "t-v.db"), model="panns-cnn14", model_dir=panns_model_dir
    )
    task = all_tasks[0]
    audio = str(root / "audio" / "tone-0.wav")
    with AudioSim(settings) as sim:
        sim.index([audio])
        top_tag = sim.catalog.tags(1)[0][0]
    choice_name = top_tag.split(",")[0].upper() + "S"  # another case, plural
    config_xml = (
        f'<View><Audio name="audio" value="$audio"/><Choices name="label" toName="audio">'
        f'<Choice value="{choice_name}"/><Choice value="Nothing like it"/></Choices></View>'
    )
    app = create_app(BackendConfig(settings=settings, local_files_root=root, cache_dir=tmp_path / "cache"))
    response = app.test_client().post(
        "/predict",
        json={"tasks": [{"id": task["id"], "data": task["data"]}], "project": PROJECT, "label_config": config_xml},
    )
    prediction = response.get_json()["results"][0]
    assert choice(prediction) == choice_name and 0 < prediction["score"] <= 1
    app.config["AUDIOSIM_LABELER"].close()
