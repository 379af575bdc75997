"""The behavioural suite: the same tests against every catalog x vector store pair (SQLite/MySQL x Lite/server)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from audiosim import ClipNotFound
from audiosim.catalog import DELETING, PENDING, vector_id
from audiosim.scan import path_key
from audiosim.service import AudioSim
from audiosim.settings import Settings
from audiosim.synth import sound, write


def test_index_then_search_finds_each_clip_first(backend, sounds):
    with AudioSim(backend) as sim:
        report = sim.index([sounds])
        assert len(report.indexed) == 6 and not report.failed
        for wav in sorted(sounds.glob("*.wav")):
            top = sim.search_file(wav, k=3)
            assert top[0].clip.path == str(wav)
            assert top[0].score == pytest.approx(1.0, abs=1e-4)
            assert len(top) == 3 and top[0].score >= top[1].score >= top[2].score
        assert sim.verify().ok


def test_reindexing_an_unchanged_folder_embeds_nothing(backend, sounds):
    with AudioSim(backend) as sim:
        sim.index([sounds])
        before = sim.stats()
        again = sim.index([sounds])
    assert again.indexed == [] and len(again.skipped) == 6
    with AudioSim(backend) as sim:  # a fresh process sees the same
        assert sim.index([sounds]).indexed == []
        assert sim.stats()["vectors"] == before["vectors"]


def test_overlapping_arguments_index_each_file_once(lite_settings, sounds):
    with AudioSim(lite_settings) as sim:
        report = sim.index([sounds, sounds / "tone.wav", sounds])
        assert sorted(report.indexed) == sorted(str(p) for p in sounds.iterdir())


def test_changed_file_is_reembedded_under_the_same_id(backend, sounds):
    target = sounds / "tone.wav"
    with AudioSim(backend) as sim:
        sim.index([sounds])
        clip_id = sim.catalog.clip_by_path_key(path_key(str(target))).id
        write(target, sound("noise", 4.0, seed=99))  # longer: more segments than before
        report = sim.index([sounds])
        assert report.indexed == [str(target)] and len(report.skipped) == 5
        clip = sim.catalog.clip(clip_id)
        assert clip.duration_s == pytest.approx(4.0) and clip.segment_count == 3
        assert sim.search_file(target, k=1)[0].clip.id == clip_id
        assert sim.verify().ok


def test_moved_file_keeps_its_identity(backend, sounds, tmp_path):
    with AudioSim(backend) as sim:
        sim.index([sounds])
        old = sim.catalog.clip_by_path_key(path_key(str(sounds / "chirp.wav")))
        (sounds / "archive").mkdir()
        shutil.move(sounds / "chirp.wav", sounds / "archive" / "chirp-renamed.wav")
        report = sim.index([sounds])
        assert report.indexed == [] and report.moved == [(old.path, str(sounds / "archive" / "chirp-renamed.wav"))]
        moved = sim.catalog.clip(old.id)
        assert moved.path.endswith("chirp-renamed.wav")
        assert sim.search_file(sounds / "archive" / "chirp-renamed.wav", k=1)[0].clip.id == old.id
        assert sim.verify().ok


def test_a_copy_is_a_new_clip(backend, sounds):
    with AudioSim(backend) as sim:
        sim.index([sounds])
        shutil.copy(sounds / "hum.wav", sounds / "hum-copy.wav")
        report = sim.index([sounds])
        assert report.indexed == [str(sounds / "hum-copy.wav")]
        top = sim.search_file(sounds / "hum.wav", k=2)
        assert {m.clip.path for m in top} == {str(sounds / "hum.wav"), str(sounds / "hum-copy.wav")}


def test_one_bad_file_never_stops_the_batch(backend, sounds):
    (sounds / "broken.wav").write_bytes(os.urandom(5000))
    (sounds / "empty.wav").write_bytes(b"")
    with AudioSim(backend) as sim:
        report = sim.index([sounds])
        assert len(report.indexed) == 6
        reasons = dict(report.failed)
        assert set(reasons) == {str(sounds / "broken.wav"), str(sounds / "empty.wav")}
        assert "empty" in reasons[str(sounds / "empty.wav")]
        assert dict(sim.catalog.failures()) == reasons  # recorded with their reasons
        os.remove(sounds / "broken.wav")
        write(sounds / "empty.wav", sound("tone", 1.0, seed=5))  # fixed: indexed, failure cleared
        report = sim.index([sounds])
        assert report.indexed == [str(sounds / "empty.wav")]
        assert sim.catalog.failures() == [(str(sounds / "broken.wav"), reasons[str(sounds / "broken.wav")])]


def test_similar_excludes_the_clip_itself(backend, corpus):
    with AudioSim(backend) as sim:
        sim.index([corpus])
        tone = sim.catalog.clip_by_path_key(path_key(str(corpus / "tone" / "tone-1.wav")))
        matches = sim.similar(tone.id, k=5)
        assert len(matches) == 5 and tone.id not in [m.clip.id for m in matches]
        with pytest.raises(ClipNotFound):
            sim.similar(999_999)


@pytest.mark.parametrize("exact_limit", [5000, 0], ids=["exact", "milvus-filter"])
def test_search_restricted_to_some_clips(backend, corpus, exact_limit, monkeypatch):
    import audiosim.service

    monkeypatch.setattr(audiosim.service, "EXACT_FILTER_SEGMENTS", exact_limit)
    with AudioSim(backend) as sim:
        sim.index([corpus])
        noise_ids = [c.id for c in sim.catalog.clips_under(str(corpus / "noise"))]
        matches = sim.search_file(corpus / "tone" / "tone-1.wav", k=10, clip_ids=noise_ids)
        assert sorted(m.clip.id for m in matches) == sorted(noise_ids)  # exact filter: all four, nothing else


def test_remove_deletes_vectors_and_rows(backend, corpus, tmp_path):
    folder = tmp_path / "c"
    shutil.copytree(corpus, folder)
    with AudioSim(backend) as sim:
        sim.index([folder])
        before = sim.stats()
        removed = sim.remove([folder / "noise"])
        assert len(removed) == 4
        after = sim.stats()
        assert after["clips"] == before["clips"] - 4 and after["vectors"] < before["vectors"]
        assert all("noise" not in m.clip.path for m in sim.search_file(folder / "noise" / "noise-1.wav", k=30))
        assert sim.verify().ok
        with pytest.raises(ClipNotFound):
            sim.remove([folder / "nothing-here.wav"])


@pytest.mark.parametrize("crash_point", ["after_catalog_pending", "after_vectors", "mid_delete"])
def test_resumes_cleanly_after_a_crash_at_each_write(backend, sounds, crash_point):
    """Leave exactly the state a crash at each write would leave, then check that the next run completes it."""
    victim = sounds / "clicks.wav"
    with AudioSim(backend) as sim:
        sim.index([sounds])
        clip = sim.catalog.clip_by_path_key(path_key(str(victim)))
        collection = sim.collection()
        vectors = sim.store.vectors(collection.name, [v for v, _, _ in sim.catalog.segments(clip.id)])
        if crash_point == "after_catalog_pending":  # row reset to pending, old vectors deleted, none written
            sim.catalog.begin_clip(clip.path, clip.path_key, os.fsencode(victim), collection_id=collection.id)
            sim.store.delete_clips(collection.name, [clip.id])
        elif crash_point == "after_vectors":  # pending row, vectors written, segments not yet recorded
            sim.catalog.begin_clip(clip.path, clip.path_key, os.fsencode(victim), collection_id=collection.id)
            ids = sorted(vectors)
            sim.store.upsert(collection.name, ids, [clip.id] * len(ids), [0.0] * len(ids), [vectors[i] for i in ids])
        else:  # a remove that deleted some vectors, then died
            sim.catalog.set_status(clip.id, DELETING)
            sim.store.delete_ids(collection.name, [vector_id(clip.id, 0)])
        assert not sim.verify().ok
        assert clip.id not in [m.clip.id for m in sim.search_file(sounds / "tone.wav", k=10)]  # never half-shown
    with AudioSim(backend) as sim:  # the next run
        report = sim.index([sounds / "tone.wav"])  # pointed elsewhere: pending clips are redone anyway
        assert sim.verify().ok
        stats = sim.stats()
        if crash_point == "mid_delete":
            assert stats["clips"] == 5 and sim.catalog.clip_by_path_key(path_key(str(victim))) is None
        else:
            assert report.indexed == [str(victim)]
            assert stats["clips"] == 6 and stats["vectors"] == stats["segments"]
            assert sim.search_file(victim, k=1)[0].clip.id == clip.id


def test_verify_finds_and_repairs_disagreement(backend, sounds):
    with AudioSim(backend) as sim:
        sim.index([sounds])
        collection = sim.collection()
        tone = sim.catalog.clip_by_path_key(path_key(str(sounds / "tone.wav")))
        sim.store.delete_ids(collection.name, [vector_id(tone.id, 0)])  # a lost vector
        stray = np.ones((1, collection.dim), np.float32) / np.sqrt(collection.dim)
        sim.store.upsert(collection.name, [vector_id(9999, 0)], [9999], [0.0], stray)  # an orphan
        report = sim.verify()
        assert len(report.problems) == 2
        repaired = sim.verify(repair=True)
        assert repaired.repaired
        assert sim.verify().ok
        assert sim.stats()["vectors"] == sim.stats()["segments"]
        assert sim.search_file(sounds / "tone.wav", k=1)[0].clip.id == tone.id


def test_pending_clip_whose_file_vanished_is_dropped(backend, sounds):
    with AudioSim(backend) as sim:
        sim.index([sounds])
        clip = sim.catalog.clip_by_path_key(path_key(str(sounds / "hum.wav")))
        sim.catalog.set_status(clip.id, PENDING)
        os.remove(sounds / "hum.wav")
        sim.index([])
        assert sim.verify().ok and sim.stats()["clips"] == 5


@pytest.mark.server
def test_an_index_run_on_a_milvus_server_seals_what_it_wrote(tmp_path, sounds, milvus_server):
    """A growing segment is searched through a rough interim index until the server seals it; the run seals it."""
    settings = Settings(
        catalog=str(tmp_path / "catalog.db"), milvus=milvus_server, model="dsp-logmel", model_dir=tmp_path / "m"
    )
    with AudioSim(settings) as sim:
        report = sim.index([sounds])
        name = sim.collection().name
        segments = sim.store.client.list_persistent_segments(name)
        assert len(report.indexed) == 6
        assert segments and {getattr(s.state, "name", s.state) for s in segments} == {"Flushed"}
        assert sum(s.num_rows for s in segments) == report.segments
        sim.store.drop_collection(name)
