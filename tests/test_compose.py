"""The production docker-compose.yml: Compose itself validates it (offline), and the variables it sets for our three
services are exactly ones our code reads, with the values landing where they should."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import unavailable

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {"AUDIOSIM_MYSQL_PASSWORD": "pw", "LABEL_STUDIO_API_KEY": "key", "LABEL_STUDIO_PASSWORD": "lspw"}


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    unavailable("neither `docker compose` nor `docker-compose` is installed (.ci/run installs docker-compose)")


def compose_config(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*compose_command(), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env},
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def services() -> dict:
    done = compose_config(SECRETS)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["services"]


def test_compose_validates_and_has_the_production_shape(services):
    assert {"etcd", "minio", "milvus", "mysql", "datasette", "label-studio", "labelstudio-backend"} <= set(services)
    for name in ("milvus", "mysql", "datasette", "label-studio", "labelstudio-backend"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    for name in ("etcd", "minio", "milvus", "mysql", "label-studio"):
        assert services[name].get("volumes"), f"{name} keeps its data in no volume"
    # Wired by service names, never by localhost.
    backend = services["labelstudio-backend"]["environment"]
    assert backend["AUDIOSIM_MILVUS"] == "http://milvus:19530" and "@mysql:3306/" in backend["AUDIOSIM_CATALOG"]
    assert backend["LABEL_STUDIO_URL"] == "http://label-studio:8080"


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(secret):
    done = compose_config({k: v for k, v in SECRETS.items() if k != secret})
    assert done.returncode != 0 and secret in done.stderr


class Recording(dict):
    """An environment that remembers which names were asked for."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def test_the_backend_reads_every_variable_compose_sets_for_it(services):
    from labelstudio_backend.config import BackendConfig

    env = Recording(services["labelstudio-backend"]["environment"])
    config = BackendConfig.from_env(env)
    assert set(env) <= env.read, f"set by compose but never read: {set(env) - env.read}"
    assert config.settings.catalog == env["AUDIOSIM_CATALOG"] and config.settings.milvus == env["AUDIOSIM_MILVUS"]
    assert config.label_studio_url == env["LABEL_STUDIO_URL"] and config.api_key == SECRETS["LABEL_STUDIO_API_KEY"]
    assert str(config.settings.model_dir) == env["AUDIOSIM_MODEL_DIR"]
    assert str(config.local_files_root) == env["LOCAL_FILES_DOCUMENT_ROOT"]


def test_the_cli_reads_every_variable_compose_sets_for_the_indexer(services):
    from audiosim.cli import cli

    read = {p.envvar for p in cli.commands["index"].params if p.envvar}
    assert set(services["audiosim"]["environment"]) <= read


@pytest.mark.asyncio
async def test_datasette_reads_every_variable_compose_sets_for_it(services, monkeypatch, tmp_path):
    from datasette.app import Datasette

    from datasette_audiosim.config import load_config

    env = services["datasette"]["environment"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Compose v2 writes volumes as mappings, docker-compose 1.x as "source:target:mode" strings.
    mounts = [
        v if isinstance(v, dict) else dict(zip(("source", "target"), v.split(":")[:2], strict=True))
        for v in services["datasette"]["volumes"]
    ]
    mount = next(v for v in mounts if v["target"] == "/config")
    metadata = yaml.safe_load((ROOT / mount["source"] / "metadata.yml").read_text())
    assert "/config/metadata.yml" in services["datasette"]["command"]
    referenced = {entry["$env"] for entry in metadata["plugins"]["datasette-audiosim"].values()}
    assert referenced == set(env), "the metadata and the compose file name different variables"
    config = await load_config(Datasette(memory=True, metadata=metadata))
    assert config.settings.catalog == env["AUDIOSIM_CATALOG"]
    assert config.settings.milvus == env["AUDIOSIM_MILVUS_URI"]
    assert str(config.settings.model_dir) == env["AUDIOSIM_MODEL_DIR"]
