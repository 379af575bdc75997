"""SQL functions over the catalog, in the datasette-faiss tradition.

    select value ->> 0 as clip_id, value ->> 1 as score from json_each(audiosim_similar(3, 5))
    select audiosim_score(3, 7)

A bad id or k makes the query fail (SQLite reports "user-defined function raised exception"; Python's sqlite3
cannot pass our message through), never a silently empty result.
"""

from __future__ import annotations

import json

import numpy as np

from audiosim import AudioSimError

MAX_K = 1000


def _fail(message: str):
    raise ValueError(message)


def _clip_id(value, name="clip_id") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        _fail(f"{name} must be an integer clip id, not {value!r}")
    return value


def make_functions(holder):
    """SQL name -> (function, number of arguments); ``holder()`` returns the service holder or raises."""

    def audiosim_similar(clip_id=None, k=10, *extra):
        """JSON array of [clip_id, score] for the k clips most like clip_id, best first."""
        if extra:
            _fail("audiosim_similar takes a clip id and an optional k")
        clip_id = _clip_id(clip_id)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            _fail(f"k must be an integer between 1 and {MAX_K}, not {k!r}")
        try:
            matches = holder().call(lambda s: s.similar(clip_id, k))
        except AudioSimError as e:
            _fail(str(e))
        return json.dumps([[m.clip.id, round(m.score, 6)] for m in matches])

    def audiosim_score(clip_a, clip_b):
        """Similarity of two clips: the cosine of their best-matching pair of segments (1 = identical)."""
        a, b = _clip_id(clip_a, "clip_a"), _clip_id(clip_b, "clip_b")
        try:
            return holder().call(lambda s: _score(s, a, b))
        except AudioSimError as e:
            _fail(str(e))

    return {"audiosim_similar": (audiosim_similar, -1), "audiosim_score": (audiosim_score, 2)}


def _score(service, a: int, b: int) -> float:
    collection = service.collection()
    vectors = []
    for clip_id in (a, b):
        service.catalog.clip(clip_id)  # raises ClipNotFound
        ids = [vid for vid, _, _ in service.catalog.segments(clip_id)]
        stored = service.store.vectors(collection.name, ids)
        if not stored:
            raise AudioSimError(f"Clip {clip_id} has no vectors; run audiosim verify --repair")
        vectors.append(np.stack(list(stored.values())))
    return round(float((vectors[0] @ vectors[1].T).max()), 6)
