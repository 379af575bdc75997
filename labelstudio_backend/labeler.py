"""What the backend does, free of Flask: suggest labels by the nearest labelled clips, and learn from annotations."""

from __future__ import annotations

import logging
import os
import re
import threading

from audiosim import AudioSimError
from audiosim.scan import path_key
from audiosim.service import AudioSim

from .config import BackendConfig
from .fetch import local_audio

logger = logging.getLogger("audiosim.labelstudio")


def project_id(project) -> str:
    """Label Studio names a project "1.1700000000" in /setup and /predict, or sends {"id": 1} in webhooks."""
    if isinstance(project, dict):
        project = project.get("id")
    return str(project).split(".")[0] if project is not None else ""


def audio_control(label_config: str | None) -> dict | None:
    """The first <Choices> (or <Labels>) applied to an <Audio>: from_name, to_name, data key, choice names, kind;
    plus the TextArea meant for the similar-clips list, if any."""
    if not label_config:
        return None
    from label_studio_tools.core.label_config import parse_config

    parsed = parse_config(label_config)
    found = None
    for name, info in parsed.items():
        inputs = info.get("inputs") or []
        if info.get("type") in ("Choices", "Labels") and inputs and inputs[0].get("type", "").startswith("Audio"):
            found = {
                "from_name": name,
                "to_name": info["to_name"][0],
                "value": inputs[0]["value"],
                "labels": list(info.get("labels") or []),
                "type": info["type"].lower(),
            }
            break
    if found is None:
        return None
    for name, info in parsed.items():
        if info.get("type") == "TextArea" and "similar" in name.lower():
            found["similar_area"] = (name, info["to_name"][0])
    return found


def singular(word: str) -> str:
    word = word.strip().lower()
    for ending, replacement in (("ies", "y"), ("ses", "s"), ("s", "")):
        if word.endswith(ending) and len(word) > len(ending) + 2:
            return word[: -len(ending)] + replacement
    return word


class Labeler:
    def __init__(self, config: BackendConfig):
        self.config = config
        self.tokens: dict[str, str] = {}  # project -> access token given in /setup
        self._service: AudioSim | None = None
        self._lock = threading.RLock()

    @property
    def service(self) -> AudioSim:
        if self._service is None:
            self._service = AudioSim(self.config.settings)
            self._service.collection()  # bind the model now: the first prediction should not pay for it
        return self._service

    def close(self) -> None:
        if self._service is not None:
            self._service.close()

    # -- versions --------------------------------------------------------------------------------
    def model_version(self, project) -> str:
        """Model name + version + the project's label state: a new annotation makes a new version, so Label
        Studio asks again; the same state gives the same version, so it never duplicates predictions."""
        with self._lock:
            embedder = self.service.embedder
            state = self.service.catalog.label_state(project_id(project))
        return f"audiosim-{embedder.name}-v{embedder.version}-{state}"

    def setup(self, project, access_token: str | None = None) -> str:
        if access_token:
            self.tokens[project_id(project)] = access_token
        return self.model_version(project)

    # -- tasks and their clips -------------------------------------------------------------------------
    def _token(self, project: str) -> str | None:
        return self.config.api_key or self.tokens.get(project)

    def clip_for_task(self, project: str, task: dict, control: dict) -> int:
        """The catalog clip of a task's audio, indexing it if it is new."""
        reference = (task.get("data") or {}).get(control["value"])
        path = local_audio(
            reference,
            self.config.label_studio_url,
            self._token(project),
            self.config.cache_dir,
            self.config.local_files_root,
        )
        service = self.service
        clip = service.catalog.clip_by_path_key(path_key(os.path.abspath(path)))
        if clip is None or clip.status != "ready":
            report = service.index([path])
            if report.failed:
                raise AudioSimError(f"task {task.get('id')}: {report.failed[0][1]}")
            clip = service.catalog.clip_by_path_key(path_key(os.path.abspath(path)))
        service.catalog.set_task_clip(project, int(task["id"]), clip.id)
        return clip.id

    # -- predict -----------------------------------------------------------------------------------------
    def predict(self, tasks: list[dict], project, label_config: str | None) -> list[dict]:
        """One prediction per task; a task that cannot be fetched or decoded gets an empty one and a log line."""
        control = audio_control(label_config)
        project = project_id(project)
        if control is None:
            logger.warning("project %s: no <Choices> or <Labels> on an <Audio> in the labelling config", project)
            return [{"result": []} for _ in tasks]
        results = []
        with self._lock:
            version = self.model_version(project)
            clips = {}
            for task in tasks:  # index the whole batch first, so its tasks are each other's neighbours
                try:
                    clips[id(task)] = self.clip_for_task(project, task, control)
                except (AudioSimError, KeyError, TypeError, ValueError) as e:
                    logger.warning("project %s task %s: no prediction: %s", project, task.get("id"), e)
            for task in tasks:
                if id(task) not in clips:
                    results.append({"result": [], "model_version": version})
                    continue
                try:
                    results.append(self._predict_one(project, clips[id(task)], control, version))
                except AudioSimError as e:
                    logger.warning("project %s task %s: no prediction: %s", project, task.get("id"), e)
                    results.append({"result": [], "model_version": version})
        return results

    def _predict_one(self, project: str, clip_id: int, control: dict, version: str) -> dict:
        service = self.service
        labelled = {c: labels for c, labels in service.catalog.labelled_clips(project).items() if c != clip_id}
        task_of_clip = {c: t for t, c in service.catalog.task_clips(project).items()}
        neighbours = service.similar(clip_id, k=self.config.neighbours)
        prediction = {"model_version": version, "result": [], "score": 0.0}
        prediction["neighbors"] = [
            {"task_id": task_of_clip.get(m.clip.id), "clip_id": m.clip.id, "score": round(m.score, 4)}
            for m in neighbours
        ]
        label, score = self._vote(clip_id, labelled, control) if labelled else self._from_tags(clip_id, control)
        if label is not None:
            prediction["result"].append(self._choice(control, label, service.catalog.clip(clip_id).duration_s))
            prediction["score"] = round(score, 4)
        if control.get("similar_area"):
            lines = [
                f"task {n['task_id'] or '-'} (clip {n['clip_id']}): {n['score']:.3f}" for n in prediction["neighbors"]
            ]
            from_name, to_name = control["similar_area"]
            prediction["result"].append(
                {"from_name": from_name, "to_name": to_name, "type": "textarea", "value": {"text": lines}}
            )
        return prediction

    def _vote(self, clip_id: int, labelled: dict[int, list[str]], control: dict) -> tuple[str | None, float]:
        """Similarity-weighted vote of the nearest labelled clips. The score is the winner's share of the vote
        times its best similarity: high only when the neighbours agree and are close."""
        matches = self.service.similar(clip_id, k=self.config.neighbours, clip_ids=list(labelled))
        allowed = set(control["labels"]) if control["labels"] else None
        votes: dict[str, float] = {}
        best: dict[str, float] = {}
        for match in matches:
            weight = max(match.score, 0.0) ** 2
            for label in labelled[match.clip.id]:
                if allowed is not None and label not in allowed:
                    continue
                votes[label] = votes.get(label, 0.0) + weight
                best[label] = max(best.get(label, 0.0), match.score)
        total = sum(votes.values())
        if not votes or total <= 0:
            return None, 0.0
        winner = max(votes, key=votes.get)
        return winner, votes[winner] / total * best[winner]

    def _from_tags(self, clip_id: int, control: dict) -> tuple[str | None, float]:
        """Nothing labelled yet: use the model's AudioSet tags when one matches a choice name; else no guess."""
        by_name = {singular(choice): choice for choice in control["labels"]}
        for tag, score in self.service.catalog.tags(clip_id):
            for part in re.split(r",\s*", tag):
                if singular(part) in by_name:
                    return by_name[singular(part)], score
        return None, 0.0

    @staticmethod
    def _choice(control: dict, label: str, duration_s: float | None) -> dict:
        if control["type"] == "choices":
            value = {"choices": [label]}
        else:  # <Labels> on audio are regions: suggest one covering the whole clip
            value = {"start": 0.0, "end": round(duration_s or 0.0, 3), "channel": 0, "labels": [label]}
        return {
            "from_name": control["from_name"],
            "to_name": control["to_name"],
            "type": control["type"],
            "value": value,
        }

    # -- learn ---------------------------------------------------------------------------------------------
    def webhook(self, event: str, data: dict) -> dict:
        project_info = data.get("project") or {}
        project = project_id(project_info)
        with self._lock:
            if event in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
                return self._learn(project, project_info, data)
            if event in ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED"):
                ids = [a["id"] for a in data.get("annotations") or [data.get("annotation") or {}] if a.get("id")]
                self.service.catalog.delete_annotations(project, [int(i) for i in ids])
                return {"deleted": len(ids)}
            if event == "START_TRAINING":
                return self.resync(project, project_info.get("label_config"))
        return {"ignored": event}

    def _learn(self, project: str, project_info: dict, data: dict) -> dict:
        annotation, task = data.get("annotation") or {}, data.get("task") or {}
        control = audio_control(project_info.get("label_config"))
        if control is None or not task.get("id") or not annotation.get("id"):
            return {"ignored": "no audio classification in this event"}
        self.clip_for_task(project, task, control)
        labels = [] if annotation.get("was_cancelled") else labels_of(annotation.get("result") or [], control)
        self.service.catalog.set_annotation(project, int(annotation["id"]), int(task["id"]), labels)
        return {"learned": labels}

    def resync(self, project: str, label_config: str | None = None) -> dict:
        """Replace what we know of the project's annotations with what Label Studio has now."""
        from .client import LabelStudioClient

        client = LabelStudioClient(self.config.label_studio_url, self._token(project))
        label_config = label_config or client.project(project)["label_config"]
        control = audio_control(label_config)
        rows, failed = [], 0
        for task in client.tasks_with_annotations(project):
            try:
                self.clip_for_task(project, task, control)
            except AudioSimError as e:
                failed += 1
                logger.warning("project %s task %s: skipped in re-sync: %s", project, task.get("id"), e)
                continue
            for annotation in task.get("annotations") or []:
                if not annotation.get("was_cancelled"):
                    rows.append(
                        (int(annotation["id"]), int(task["id"]), labels_of(annotation.get("result") or [], control))
                    )
        self.service.catalog.replace_annotations(project, rows)
        return {"annotations": len(rows), "failed_tasks": failed}


def labels_of(result: list[dict], control: dict) -> list[str]:
    labels = []
    for item in result:
        if item.get("from_name") == control["from_name"]:
            value = item.get("value") or {}
            labels.extend(value.get("choices") or value.get("labels") or [])
    return labels
