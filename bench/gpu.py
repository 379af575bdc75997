"""Cnn14 throughput on a GPU (torch, as audiosim runs it there), against the same machine's CPU in the same run.

    python bench/gpu.py --out gpu.json

Model only (2 s windows at 32 kHz, random weights: speed does not depend on them). Needs torch and torchlibrosa,
nothing else of audiosim, so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch
from report import machine  # bench/ is the script's own folder, first on sys.path

CNN14 = Path(__file__).resolve().parents[1] / "core" / "embedders" / "cnn14.py"


def load_cnn14_class():
    spec = importlib.util.spec_from_file_location("cnn14", CNN14)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Cnn14


def windows_per_s(model, batch: int, device: str, dtype=None, seconds: float = 3.0) -> float:
    x = torch.randn(batch, 64000, device=device) * 0.1
    autocast = torch.autocast(device_type=device, dtype=dtype) if dtype else torch.autocast(device, enabled=False)
    with torch.inference_mode(), autocast:
        model(x)  # warm-up: kernels, cuDNN autotuning
        if device == "cuda":
            torch.cuda.synchronize()
        done, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            model(x)
            done += batch
        if device == "cuda":
            torch.cuda.synchronize()
    return done / (time.perf_counter() - t)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    torch.backends.cudnn.benchmark = True
    Cnn14 = load_cnn14_class()
    model = Cnn14().eval()
    results = {"cpu_threads": torch.get_num_threads(), "cpu": {}, "gpu": {}}
    results["cpu"]["fp32_batch16"] = round(windows_per_s(model, 16, "cpu"), 1)
    if torch.cuda.is_available():
        results["device"] = torch.cuda.get_device_name(0)
        model = model.cuda()
        for batch in (16, 64, 256):
            results["gpu"][f"fp32_batch{batch}"] = round(windows_per_s(model, batch, "cuda"), 1)
            results["gpu"][f"bf16_batch{batch}"] = round(windows_per_s(model, batch, "cuda", torch.bfloat16), 1)
        best = max(results["gpu"].values())
        results["best_gpu_over_cpu"] = round(best / results["cpu"]["fp32_batch16"], 1)
        # Each window is one second of new audio (1 s hop): windows/s is also x realtime.
        results["best_gpu_x_realtime"] = round(best)
    results.update(machine=machine(), torch=torch.__version__)
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
