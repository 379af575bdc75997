"""The few Label Studio API calls the backend needs (to re-sync annotations on START_TRAINING)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from .fetch import FetchError


class LabelStudioClient:
    def __init__(self, url: str | None, token: str | None):
        if not url or not token:
            raise FetchError("re-sync needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or the token from /setup)")
        self.url, self.token = url.rstrip("/"), token

    def _get(self, path: str):
        schemes = ["Bearer", "Token"] if self.token.count(".") == 2 else ["Token", "Bearer"]
        error = None
        for scheme in schemes:
            request = urllib.request.Request(self.url + path, headers={"Authorization": f"{scheme} {self.token}"})
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    return json.load(response)
            except urllib.error.HTTPError as e:
                error = f"HTTP {e.code}"
                if e.code not in (401, 403):
                    break
            except (urllib.error.URLError, OSError) as e:
                error = str(getattr(e, "reason", e))
                break
        raise FetchError(f"Label Studio API {path} failed: {error}")

    def project(self, project: str) -> dict:
        return self._get(f"/api/projects/{project}")

    def tasks_with_annotations(self, project: str) -> list[dict]:
        return self._get(f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=true")
