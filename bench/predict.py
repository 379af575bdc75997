"""Label Studio backend: prediction latency per task, uncached (fetch, decode, embed, index, search) and cached
(the task's clip already in the catalog), through the backend's Flask app.

    .venv/bin/python bench/predict.py [--model aisfx] [--tasks 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from report import machine  # bench/ is the script's own folder, first on sys.path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="aisfx")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each task's clip")
    args = parser.parse_args(argv)

    from audiosim import Settings
    from audiosim.synth import KINDS, sound, write
    from labelstudio_backend.app import create_app
    from labelstudio_backend.config import BackendConfig

    config_xml = (
        '<View><Audio name="audio" value="$audio"/><Choices name="label" toName="audio">'
        + "".join(f'<Choice value="{k}"/>' for k in KINDS)
        + "</Choices></View>"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tasks = []
        for i in range(args.tasks):
            path = write(tmp / "audio" / f"{i}.wav", sound(KINDS[i % len(KINDS)], args.seconds, seed=i))
            tasks.append({"id": i + 1, "data": {"audio": str(path)}})
        app = create_app(BackendConfig(settings=Settings(str(tmp / "c.db"), model=args.model), cache_dir=tmp / "cache"))
        client = app.test_client()
        client.post("/setup", json={"project": "1.1", "schema": config_xml})  # opens the catalog, store, model
        for task in tasks[: args.tasks // 2]:  # label half, as a project in progress would have
            client.post(
                "/webhook",
                json={
                    "action": "ANNOTATION_CREATED",
                    "project": {"id": 1, "label_config": config_xml},
                    "task": task,
                    "annotation": {
                        "id": task["id"],
                        "result": [
                            {
                                "from_name": "label",
                                "to_name": "audio",
                                "type": "choices",
                                "value": {"choices": [KINDS[(task["id"] - 1) % len(KINDS)]]},
                            }
                        ],
                    },
                },
            )
        timings = {"uncached": [], "cached": []}
        rest = tasks[args.tasks // 2 :]
        for phase in ("uncached", "cached"):
            for task in rest:
                t = time.perf_counter()
                response = client.post("/predict", json={"tasks": [task], "project": "1.1", "label_config": config_xml})
                timings[phase].append(time.perf_counter() - t)
                assert response.status_code == 200
        app.config["AUDIOSIM_LABELER"].close()
    result = {
        "bench": "predict",
        "model": args.model,
        "clip_s": args.seconds,
        "tasks": len(rest),
        **{f"{k}_p50_ms": round(statistics.median(v) * 1000, 1) for k, v in timings.items()},
        **{f"{k}_max_ms": round(max(v) * 1000, 1) for k, v in timings.items()},
        "machine": machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
