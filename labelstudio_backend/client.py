"""The few Label Studio API calls the backend needs (to re-sync annotations on START_TRAINING)."""

from __future__ import annotations

import json

from .fetch import FetchError, open_with_token


class LabelStudioClient:
    def __init__(self, url: str | None, token: str | None):
        if not url or not token:
            raise FetchError("re-sync needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or the token from /setup)")
        self.url, self.token = url.rstrip("/"), token

    def _get(self, path: str):
        with open_with_token(self.url + path, self.token, timeout=120) as response:
            return json.load(response)

    def project(self, project: str) -> dict:
        return self._get(f"/api/projects/{project}")

    def tasks_with_annotations(self, project: str) -> list[dict]:
        return self._get(f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=true")
