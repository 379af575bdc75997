"""The Flask app: label-studio-ml's ``init_app`` with our model class, and the routes it gets wrong replaced.

label-studio-ml 1.0.9 answers /setup and /predict with a model version of its own job system ("INITIAL"),
runs webhooks in a spawned process per event (which cannot open a Milvus Lite store this process holds), names
webhook jobs by whole seconds (two events in one second collide), ignores ANNOTATIONS_DELETED and
START_TRAINING, and answers GET /versions with 405. Those routes are ours; /health and the app object are its.
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import tempfile

from flask import jsonify, request
from label_studio_ml.api import init_app
from label_studio_ml.model import LabelStudioMLBase

from .config import BackendConfig
from .labeler import Labeler

logger = logging.getLogger("audiosim.labelstudio")


class AudioSimModel(LabelStudioMLBase):
    """The label-studio-ml model class. Our routes call the shared ``Labeler``; this class keeps the classic
    interface working for code that drives it directly."""

    labeler: Labeler | None = None

    def predict(self, tasks, **kwargs):
        return self.labeler.predict(tasks, kwargs.get("project"), self.label_config)

    def fit(self, tasks, workdir=None, **kwargs):
        event, data = kwargs.get("event"), kwargs.get("data") or {}
        return self.labeler.webhook(event, data) if event else {}


def create_app(config: BackendConfig):
    """The backend app. label-studio-ml keeps one Flask app per process; calling this again re-points it."""
    previous = _labeler()
    if previous is not None:
        previous.close()
    labeler = Labeler(config)
    AudioSimModel.labeler = labeler
    app = init_app(AudioSimModel, model_dir=tempfile.mkdtemp(prefix="audiosim-ls-"))
    app.config["AUDIOSIM_LABELER"] = labeler
    app.config["AUDIOSIM_BASIC_AUTH"] = (
        "Basic " + base64.b64encode(f"{config.basic_auth[0]}:{config.basic_auth[1]}".encode()).decode()
        if config.basic_auth
        else None
    )
    if "versions_get" not in app.view_functions:
        app.add_url_rule("/versions", "versions_get", _versions, methods=["GET"])
        app.before_request(_require_basic_auth)
    app.view_functions.update({"_setup": _setup, "_predict": _predict, "webhook": _webhook, "get_version": _versions})
    return app


def _labeler() -> Labeler | None:
    return AudioSimModel.labeler


def _setup():
    data = request.get_json(force=True) or {}
    return jsonify({"model_version": _labeler().setup(data.get("project"), data.get("access_token"))})


def _predict():
    data = request.get_json(force=True) or {}
    project = data.get("project")
    results = _labeler().predict(data.get("tasks") or [], project, data.get("label_config"))
    return jsonify({"results": results, "model_version": _labeler().model_version(project)})


def _webhook():
    data = request.get_json(force=True) or {}
    event = data.pop("action", None)
    try:
        outcome = _labeler().webhook(event, data)
    except Exception as e:  # noqa: BLE001 - a webhook must answer; the reason goes to the log
        logger.warning("webhook %s failed: %s", event, e)
        return jsonify({"error": str(e)}), 500
    return jsonify({"event": event, **outcome}), 201


def _versions():
    data = request.get_json(silent=True) or {}
    project = data.get("project") or request.args.get("project")
    return jsonify({"versions": [_labeler().model_version(project)] if project else []})


def _require_basic_auth():
    from flask import current_app

    expected = current_app.config.get("AUDIOSIM_BASIC_AUTH")
    if expected and not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected.encode()):
        return ("Authentication required", 401, {"WWW-Authenticate": 'Basic realm="audiosim"'})
    return None


def main(host: str = "0.0.0.0", port: int = 9090) -> None:
    from werkzeug.serving import run_simple

    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"))
    app = create_app(BackendConfig.from_env())
    run_simple(host, port, app, threaded=True)
