"""Embedders: the real PANNs Cnn14 architecture (random-weight checkpoint), aiSFX's shipped weights, the DSP one."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_measuring_peak

from audiosim import ModelMismatch, ModelNotAvailable, Settings
from audiosim.decode import load
from audiosim.embedders import loop_pad
from audiosim.embedders.aisfx import AiSfx
from audiosim.embedders.dsp import LogMelStats
from audiosim.embedders.panns import PannsCnn14, load_cnn14
from audiosim.labels import audioset_labels
from audiosim.models import choose_embedder, default_model_name, model_statuses
from audiosim.plugins import embedder_classes
from audiosim.service import AudioSim
from audiosim.synth import KINDS, sound, write

SHARED_LABELS = Path(__file__).resolve().parents[1] / "core" / "data" / "audioset_class_labels_indices.csv"


def test_builtin_embedders_register_through_the_hook_in_preference_order():
    assert list(embedder_classes())[:3] == ["panns-cnn14", "aisfx", "dsp-logmel"]


def test_audioset_labels_ship_with_the_package():
    labels = audioset_labels()
    assert len(labels) == 527 and labels[0] == "Speech" and labels[137] == "Music"


def test_our_cnn14_has_exactly_panns_inference_parameters(tmp_path):
    """State-dict compatibility with the official checkpoint: compare against panns_inference's own Cnn14,
    imported in a child process whose HOME already holds the label list, so its import-time wget never runs."""
    home = tmp_path / "home"
    (home / "panns_data").mkdir(parents=True)
    shutil.copy(SHARED_LABELS, home / "panns_data" / "class_labels_indices.csv")
    script = textwrap.dedent(
        """
        import json
        from panns_inference.models import Cnn14
        m = Cnn14(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000,
                  classes_num=527)
        print(json.dumps({k: list(v.shape) for k, v in m.state_dict().items()}))
        """
    )
    env = {**os.environ, "HOME": str(home), "PATH": os.path.dirname(sys.executable)}  # no wget on PATH either
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    import json

    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    from audiosim.embedders.cnn14 import Cnn14

    ours = {k: list(v.shape) for k, v in Cnn14().state_dict().items()}
    assert ours == theirs


def test_our_cnn14_front_end_computes_torchlibrosas_in_its_place():
    """The STFT's kernels and the mel filters are filled in numpy, not through librosa: the same values as
    torchlibrosa's (panns_inference's front end), and the same log-mel out of the same sounds."""
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram

    from audiosim.embedders.cnn14 import Cnn14

    ours = Cnn14()
    spectrogram = Spectrogram(n_fft=1024, hop_length=320, win_length=1024, window="hann", center=True)
    logmel = LogmelFilterBank(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000, top_db=None)
    theirs = {
        "spectrogram_extractor.stft.conv_real.weight": spectrogram.stft.conv_real.weight,
        "spectrogram_extractor.stft.conv_imag.weight": spectrogram.stft.conv_imag.weight,
        "logmel_extractor.melW": logmel.melW,
    }
    state = ours.state_dict()
    for name, want in theirs.items():
        assert state[name].shape == want.shape and state[name].dtype == torch.float32
        assert torch.allclose(state[name], want, rtol=0, atol=1e-6 * float(want.abs().max())), name
    windows = [sound(kind, 2.0, seed=i)[:samples] for i, kind in enumerate(KINDS) for samples in (64000, 600)]
    with torch.no_grad():
        for window in windows:
            batch = torch.from_numpy(window[None].astype(np.float32))
            power = ours.spectrogram_extractor(batch)
            assert torch.allclose(power, spectrogram(batch), rtol=1e-5, atol=1e-6 * float(power.max()))
            assert torch.allclose(ours.logmel_extractor(power), logmel(power), rtol=0, atol=1e-4)  # decibels


def test_loading_cnn14_leaves_librosa_and_numba_out_of_the_process(panns_model_dir):
    """librosa brings numba and LLVM with it: through torchlibrosa, building Cnn14 took a process from 219 to
    445 MB, and a 2-hour file's index run peaked 0.17-0.22 GB higher for it."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import numpy as np
        from audiosim.embedders.panns import PannsCnn14
        embedder = PannsCnn14(Path({str(panns_model_dir)!r}))
        embedder.embed([np.zeros(64000, np.float32)])
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("librosa", "numba", "llvmlite", "torchlibrosa")))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_panns_loads_the_checkpoint_and_embeds(panns_model_dir):
    embedder = PannsCnn14(model_dir=panns_model_dir, batch_size=4)
    assert embedder.unavailable_reason() is None
    windows = [sound(kind, 2.0, seed=i) for i, kind in enumerate(KINDS)] + [sound("tone", 0.1, seed=9)]
    out = embedder.embed(windows)
    assert out.vectors.shape == (7, 2048) and out.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)
    assert out.class_scores.shape == (7, 527) and ((out.class_scores >= 0) & (out.class_scores <= 1)).all()
    again = PannsCnn14(model_dir=panns_model_dir, batch_size=3).embed(windows)
    assert np.allclose(out.vectors, again.vectors, atol=1e-5)  # deterministic, whatever the batching
    sims = out.vectors @ out.vectors.T
    assert (sims[~np.eye(7, dtype=bool)] < 0.98).all()  # different sounds give clearly different vectors


def test_onnx_runtime_reproduces_torch_and_caches_its_export(panns_model_dir, tmp_path):
    import onnx

    from audiosim.embedders import onnx_runtime

    folder = tmp_path / "models"
    shutil.copytree(panns_model_dir, folder, ignore=shutil.ignore_patterns("*.onnx"))
    windows = [sound(kind, 2.0, seed=i) for i, kind in enumerate(KINDS)]
    by_torch = PannsCnn14(model_dir=folder, runtime="torch")
    fast = PannsCnn14(model_dir=folder, runtime="onnx")
    assert (by_torch.engine, fast.engine) == ("torch", "onnxruntime")
    want, got = by_torch.embed(windows), fast.embed(windows)
    # Float reassociation differs between the engines: the same vectors to search, not to the last bit.
    assert (np.sum(want.vectors * got.vectors, axis=1) > 0.9999).all()
    assert np.abs(want.class_scores - got.class_scores).max() < 1e-3
    cached = onnx_runtime.cache_path(fast.checkpoint_path)
    assert cached.exists() and not list(folder.glob("*.partial"))
    stamp = cached.stat().st_mtime_ns
    again = PannsCnn14(model_dir=folder, runtime="onnx")
    assert again.engine == "onnxruntime"
    assert cached.stat().st_mtime_ns == stamp  # the second load reused the export
    # Its threads sleep between runs instead of spinning on the cores the indexer's reader and writer need.
    options = again.load().session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    # The graph starts after the STFT, which numpy and scipy compute faster than its convolutions would.
    graph = onnx.load(str(cached)).graph
    assert [i.name for i in graph.input] == ["power"]
    assert not [n for n in graph.node if "spectrogram_extractor" in n.name]


def test_the_int8_exports_blocks_compute_the_same_cnn14(panns_model_dir):
    """What the int8 export does in blocks 5 and 6 (4 and 2 mel bins): the same sums without the zero columns;
    and in every block's pool: the same averages as a depthwise convolution."""
    from audiosim.embedders import onnx_runtime

    model = load_cnn14(panns_model_dir / PannsCnn14.checkpoint.filename)
    batch = torch.from_numpy(np.stack([sound(kind, 2.0, seed=40 + i) for i, kind in enumerate(KINDS)]))
    whole = []  # the convolution layers called whole, with their padding
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and name.startswith("conv_block"):
            module.register_forward_hook(lambda module, args, out, name=name: whole.append(name.split(".")[0]))
    with torch.no_grad():
        want = model(batch)
        called_whole, whole[:] = list(whole), []
        with onnx_runtime._blocks_shaped(model, onnx_runtime.INT8_BLOCKS):
            got = model(batch)
    for w, g in zip(want, got, strict=True):  # float reassociation apart: the batch norms are folded differently
        assert (w - g).abs().max() <= 1e-5 * w.abs().max()
    # Blocks 5 and 6 really were convolved in parts, and only they.
    assert len(called_whole) == 12 and sorted(set(whole)) == [f"conv_block{i}" for i in range(1, 5)]
    assert len(whole) == 8
    blocks = [module for name, module in model.named_children() if name.startswith("conv_block")]
    assert len(blocks) == 6 and not any(block.unpadded_up_to or block.pool_by_convolution for block in blocks)


@pytest.mark.parametrize("samples", [64000, 32017, 600])
def test_the_numpy_stft_computes_cnn14s_own_power_spectra(samples):
    from audiosim.embedders.cnn14 import Cnn14
    from audiosim.embedders.cnn14_stft import power_spectra

    windows = [sound(kind, 2.0, seed=i)[:samples] * gain for i, kind in enumerate(KINDS) for gain in (1.0, 1e-3)]
    batch = np.stack(windows).astype(np.float32)
    with torch.no_grad():
        want = Cnn14().spectrogram_extractor(torch.from_numpy(batch)).numpy()
    got = power_spectra(batch)
    assert got.shape == want.shape and got.dtype == np.float32
    peaks = want.max(axis=(1, 2, 3), keepdims=True)
    assert (np.abs(got - want) <= 1e-5 * peaks).all()


def test_a_cached_onnx_graph_loads_without_torch_or_optimising_again_in_bounded_memory(panns_model_dir, tmp_path):
    """ONNX Runtime needs several times the graph's size while it optimises a plain export, and torch would add
    its own and the model's: the cache holds the optimised graph, vouched for by its checksum and torch's
    outputs on the probe, so a later load needs neither."""
    from audiosim.embedders import onnx_runtime

    folder = tmp_path / "models"
    shutil.copytree(panns_model_dir, folder, ignore=shutil.ignore_patterns("*.onnx"))
    load = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from audiosim.embedders.panns import PannsCnn14
        embedder = PannsCnn14(model_dir=Path({str(folder)!r}), runtime="onnx")
        assert embedder.engine == "onnxruntime"
        print("torch" in sys.modules)
        """
    )

    def load_in_a_process() -> tuple[bool, int]:
        done, peak_mib = run_measuring_peak([sys.executable, "-c", load], check=True)
        return done.stdout.split()[-1] == "True", peak_mib

    first = load_in_a_process()  # exports and optimises, with torch
    graph = onnx_runtime.cache_path(folder / "Cnn14_mAP=0.431.pth")
    assert graph.exists() and list(folder.glob("*.onnx")) == [graph]
    torch_loaded, again = load_in_a_process()
    # Measured: 0.53 GB from the cache; 1.9 GB when each load held torch's model and optimised. The first use
    # peaked at 2.29 GB while the exporter held the weights thrice over and torch's model stayed through the
    # optimisation; 1.81 GB with the weights added after the export and the model let go before optimising.
    assert first[0] and not torch_loaded
    assert again < 900 and again < first[1] < 2048


def test_int8_runs_quantized_convolutions_close_to_float32_only_when_asked_for(panns_model_dir, tmp_path):
    import onnx

    from audiosim.embedders import onnx_runtime

    folder = tmp_path / "models"
    shutil.copytree(panns_model_dir, folder, ignore=shutil.ignore_patterns("*.onnx"))
    windows = [sound(kind, 2.0, seed=100 + i) * gain for i, kind in enumerate(KINDS) for gain in (1.0, 0.1)]
    want = PannsCnn14(model_dir=folder, runtime="torch").embed(windows)
    int8 = PannsCnn14(model_dir=folder, runtime="int8")
    assert int8.engine == "onnxruntime-int8"
    got = int8.embed(windows)
    assert (np.sum(want.vectors * got.vectors, axis=1) > 0.99).all()
    assert np.abs(want.class_scores - got.class_scores).max() < 0.05
    nearest = [np.argsort(-(v @ v.T), axis=1)[:, 1] for v in (want.vectors, got.vectors)]
    assert np.mean(nearest[0] == nearest[1]) >= 0.9

    # The convolutions' weights really are 8-bit, in a graph cached apart from the float32 one.
    graph = onnx_runtime.cache_path(int8.checkpoint_path, "int8")
    weights = onnx.load(str(graph)).graph.initializer
    assert sum(w.data_type == onnx.TensorProto.INT8 for w in weights) >= 10
    stamp = graph.stat().st_mtime_ns
    assert PannsCnn14(model_dir=folder, runtime="int8").engine == "onnxruntime-int8"
    assert graph.stat().st_mtime_ns == stamp  # the second load reused it
    assert PannsCnn14(model_dir=folder, runtime="auto").engine != "onnxruntime-int8"
    assert graph.exists()  # caching the float32 graph kept the int8 one


def test_int8_fuses_every_quantized_convolution_and_keeps_the_quantizer_quiet(tmp_path):
    """An untrained checkpoint's folded biases are all zero, and torch's exporter shares identical tensors between
    layers: every quantized convolution must still get its own integer bias and fuse into one integer kernel
    (speed measured on such checkpoints must be what real ones get). In a program that configured no logging,
    the quantizer's notices must not reach the terminal, nor leave a handler on the root logger."""
    script = textwrap.dedent(
        f"""
        import collections, logging, onnx, torch
        from audiosim.embedders import int8, onnx_runtime
        from audiosim.embedders.cnn14 import Cnn14
        from audiosim.embedders.panns import PannsCnn14
        torch.save({{"model": Cnn14().state_dict()}}, {str(tmp_path / PannsCnn14.checkpoint.filename)!r})
        embedder = PannsCnn14(model_dir={str(tmp_path)!r}, runtime="int8")
        assert embedder.engine == "onnxruntime-int8"
        graph = onnx.load(str(onnx_runtime.cache_path(embedder.checkpoint_path, "int8"))).graph
        ops = collections.Counter(node.op_type for node in graph.node)
        print(ops["QLinearConv"], ops["Conv"], len(int8.KEEP_FLOAT32), len(logging.getLogger().handlers))
        print(ops["BatchNormalization"], ops["Relu"] + ops["AveragePool"] + ops["Concat"], ops["DequantizeLinear"])
        print(sum(node.domain == "com.microsoft.nchwc" for node in graph.node))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    fused, left_float32, kept_float32, root_handlers, batch_norms, float_between, back_to_float, blocked = map(
        int, done.stdout.split()
    )
    # Cnn14 has 12 convolutions (the STFT is computed outside the graph); blocks 5 and 6, convolved without their
    # padding, have 3 and 2 parts each: 18 in the graph, and 5 more that pool. Every batch norm but the log-mel's is
    # folded into them.
    assert (fused, left_float32, root_handlers, batch_norms) == (23 - kept_float32, kept_float32, 0, 1)
    # Between the convolutions nothing runs in float32: the activations go back to it once, after block 6.
    assert (float_between, back_to_float) == (0, 1)
    # Block 1's float32 convolution is not put in ONNX Runtime's blocked layout only to be reordered back.
    assert blocked == 0
    assert "WARNING" not in done.stderr and "bias" not in done.stderr


def test_an_int8_graph_that_drifts_is_refused_and_not_kept(panns_model_dir, tmp_path, monkeypatch, caplog):
    """A graph whose answers drift further from float32's than the agreement asked for must be refused at load,
    with the reason said, and leave no cache behind. How far a quantized graph drifts depends on the CPU's
    integer kernels (the first convolution quantized too drifted to cosine 0.75 on AVX2, and stayed within 0.99
    on a Xeon with VNNI), so the drift here comes from asking for float32's own agreement, which 8-bit
    arithmetic cannot give on any CPU."""
    from audiosim.embedders import onnx_runtime

    folder = tmp_path / "models"
    shutil.copytree(panns_model_dir, folder, ignore=shutil.ignore_patterns("*.onnx*"))  # graphs and their notes
    monkeypatch.setitem(onnx_runtime.AGREEMENTS, "int8", onnx_runtime.AGREEMENT)
    embedder = PannsCnn14(model_dir=folder, runtime="int8")
    with pytest.raises(ModelNotAvailable, match="in int8"):
        embedder.load()
    assert "embeddings differ (cosine" in caplog.text
    assert not onnx_runtime.cache_path(embedder.checkpoint_path, "int8").exists()
    assert not list(folder.glob("*.onnx*"))


def test_bfloat16_twin_answers_like_float32_and_auto_takes_it_where_the_cpu_has_bfloat16_instructions(panns_model_dir):
    from audiosim.embedders import packed

    windows = [sound(kind, 2.0, seed=i) for i, kind in enumerate(KINDS)]
    want = PannsCnn14(model_dir=panns_model_dir, runtime="torch").embed(windows)
    # Built directly, the twin runs on any CPU (slowly without AMX or AVX-512 BF16): its answers are checked here.
    twin = packed.load_packed_cnn14(load_cnn14(panns_model_dir / PannsCnn14.checkpoint.filename), "bfloat16")
    assert twin is not None
    assert twin.packed == packed.bfloat16_available()  # oneDNN's packed, fused convolutions wherever they run fast
    how = [layer[0] for block in twin.blocks for layer in block]
    two_bins = [packed._convolve_two_bins_relu] * 2  # block 6, over its two bins
    if not twin.packed:
        assert how == [packed._convolve_eager_relu] * 10 + two_bins
    elif packed.amx_available():  # block 5's second convolution in pieces: 1,024 outputs in 4
        assert twin.winograd_bins == ()
        assert how == [packed._convolve_packed_relu] * 9 + [packed._convolve_pieces_relu] + two_bins
    else:  # AVX-512 BF16: blocks 4 and 5 by Winograd's F(2x2, 3x3)
        assert twin.winograd_bins == (8, 4)
        assert how == [packed._convolve_packed_relu] * 6 + [packed._convolve_winograd_relu] * 4 + two_bins
    embeddings, scores = twin(np.stack(windows))
    got = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    assert (np.sum(want.vectors * got, axis=1) > 0.995).all()
    assert np.abs(want.class_scores - scores).max() < packed.AGREEMENT["bfloat16"][1]
    # The same nearest other sound for every sound: search sees the same neighbours.
    nearest = [np.argsort(-(v @ v.T), axis=1)[:, 1] for v in (want.vectors, got)]
    assert (nearest[0] == nearest[1]).all()

    auto = PannsCnn14(model_dir=panns_model_dir, runtime="auto")
    if packed.bfloat16_available():
        assert auto.engine == "torch-bfloat16"
        assert PannsCnn14(model_dir=panns_model_dir, runtime="bfloat16").engine == "torch-bfloat16"
    else:
        assert auto.engine == ("torch-float32" if packed.float32_preferred() else "onnxruntime")
        with pytest.raises(ModelNotAvailable, match="amx_bf16 or avx512_bf16"):
            PannsCnn14(model_dir=panns_model_dir, runtime="bfloat16").load()


def test_float32_twin_answers_as_torch_does_and_auto_takes_it_on_avx512_or_avx2_without_bfloat16(panns_model_dir):
    from audiosim.embedders import packed

    # More windows than it runs at once: each part's answers must come back in their windows' places.
    windows = [sound(KINDS[i % len(KINDS)], 2.0, seed=i) for i in range(packed.WINDOWS_AT_ONCE["float32"] + 3)]
    want = PannsCnn14(model_dir=panns_model_dir, runtime="torch").embed(windows)
    embedder = PannsCnn14(model_dir=panns_model_dir, runtime="float32")  # asked for, it runs on any CPU
    got = embedder.embed(windows)
    assert len(got.vectors) == len(windows)
    assert embedder.engine == "torch-float32" and embedder.load().packed
    how = [layer[0] for block in embedder.load().blocks for layer in block]
    if packed.winograd_preferred("float32"):  # AVX2 without AVX-512: blocks 3-5 by Winograd's F(2x2, 3x3)
        assert embedder.load().winograd_bins == (16, 8, 4)
        assert (
            how
            == [packed._convolve_packed_relu] * 4
            + [packed._convolve_winograd_relu] * 6
            + [packed._convolve_two_bins_relu] * 2
        )
    else:  # blocks 1-4 convolved, block 5 as patches, block 6 over its two bins
        assert embedder.load().winograd_bins == ()
        assert (
            how
            == [packed._convolve_packed_relu] * 8
            + [packed._convolve_patches_relu] * 2
            + [packed._convolve_two_bins_relu] * 2
        )
    # float32 throughout: the same sums in another order (scores 7.5e-5 apart at most, measured; 8.0e-5 with blocks
    # 3-5 by Winograd, cosine 0.9999999).
    min_cosine, max_score_error = packed.AGREEMENT["float32"]
    assert (np.sum(want.vectors * got.vectors, axis=1) > min_cosine).all()
    assert np.abs(want.class_scores - got.class_scores).max() < max_score_error / 4

    if not packed.bfloat16_available():
        auto = PannsCnn14(model_dir=panns_model_dir, runtime="auto")
        assert auto.engine == ("torch-float32" if packed.float32_preferred() else "onnxruntime")


@pytest.mark.parametrize("frames, bins", [(1, 4), (2, 4), (12, 4), (7, 3), (31, 8)])
def test_a_convolution_as_a_matrix_product_over_its_patches_is_the_3x3_convolution(frames, bins):
    """The float32 twin runs block 5's convolutions as one matrix product over each output's 3x3 patch. It must
    give the padded 3x3 convolution's sums, at any number of frames and bins."""
    from audiosim.embedders import packed

    generator = torch.Generator().manual_seed(frames * bins)
    weight = torch.randn(24, 16, 3, 3, generator=generator)
    bias = torch.randn(24, generator=generator)
    x = torch.randn(3, 16, frames, bins, generator=generator)
    want = torch.relu(F.conv2d(x, weight, bias, padding=1))
    got = packed._convolve_patches_relu(
        x.contiguous(memory_format=torch.channels_last), *packed._patch_matrix(weight, bias, torch.float32)
    )
    assert got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last)  # what the next convolution takes
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert (want > 0.5).any() and (want == 0).any()  # the check sees both sides of the ReLU


@pytest.mark.parametrize("frames", [1, 2, 6, 31])
def test_the_bfloat16_last_block_as_one_matrix_product_is_the_3x3_convolution(frames):
    """Cnn14's last block sees 2 mel bins; the twin runs its convolutions as one matrix product over the kernel
    taps that meet real input. It must give the padded 3x3 convolution's sums, at any number of frames."""
    from audiosim.embedders import packed

    generator = torch.Generator().manual_seed(frames)
    weight = torch.randn(24, 16, 3, 3, generator=generator)
    bias = torch.randn(24, generator=generator)
    x = torch.randn(3, 16, frames, packed.LAST_BLOCK_BINS, generator=generator).to(torch.bfloat16)
    # The reference sees the same bfloat16-rounded numbers, summed in float32.
    want = torch.relu(
        F.conv2d(x.float(), weight.to(torch.bfloat16).float(), bias.to(torch.bfloat16).float(), padding=1)
    )
    got = packed._convolve_two_bins_relu(
        x.contiguous(memory_format=torch.channels_last), *packed._two_bin_matrix(weight, bias, torch.bfloat16)
    )
    assert got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last)  # what the head and the next product take
    assert torch.allclose(got.float(), want, atol=0.1, rtol=0.02)  # bfloat16's output rounding: 1 part in 256
    assert (want > 0.5).any() and (want == 0).any()  # the check sees both sides of the ReLU


@pytest.mark.parametrize("frames, bins", [(1, 1), (2, 2), (1, 4), (12, 4), (25, 8), (7, 3), (50, 16), (6, 2)])
def test_a_convolution_by_winograd_is_the_3x3_convolution(frames, bins):
    """The bfloat16 twin runs blocks 4 and 5 by Winograd's F(2x2, 3x3) on AVX-512 BF16, the float32 twin blocks 3
    to 5 on AVX2. In float32 its sums must be the padded 3x3 convolution's to float32's rounding, at odd and even
    frames and bins, a tile's worth or less, and whether the batch's windows are transformed all at once or a few
    at a time (TILES_AT_ONCE: 25 by 8 is 52 tiles a window, 50 by 16 is 200); in bfloat16, within the error its
    rounded tiles add."""
    from audiosim.embedders import packed

    generator = torch.Generator().manual_seed(frames * 100 + bins)
    weight = torch.randn(24, 16, 3, 3, generator=generator)
    bias = torch.randn(24, generator=generator)
    x = torch.randn(3, 16, frames, bins, generator=generator).contiguous(memory_format=torch.channels_last)
    want = torch.relu(F.conv2d(x, weight, bias, padding=1))
    got = packed._convolve_winograd_relu(x, packed._winograd_taps(weight, torch.float32), bias)
    assert got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last)  # what the next convolution and the pool take
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert (want > 0.5).any() and (want == 0).any()  # the check sees both sides of the ReLU

    rounded = x.to(torch.bfloat16)
    want = torch.relu(F.conv2d(rounded.float(), weight, bias, padding=1))
    got = packed._convolve_winograd_relu(
        rounded, packed._winograd_taps(weight, torch.bfloat16), bias.to(torch.bfloat16)
    )
    assert got.dtype == torch.bfloat16
    # Measured: 0.0045 of the output's norm on the twin's shapes, twice a direct bfloat16 convolution's.
    assert (got.float() - want).norm() / want.norm() < 0.01


@pytest.mark.parametrize("precision", ["bfloat16", "float32"])
def test_a_packed_kernel_that_fails_leaves_auto_on_onnx_runtime(panns_model_dir, monkeypatch, caplog, precision):
    """The packed twins call one of torch's private oneDNN kernels. Where it fails (another torch, a CPU oneDNN
    refuses), auto must go on with ONNX Runtime and say why, and --runtime bfloat16 or float32 must say it
    cannot."""
    import torch

    from audiosim.embedders import packed

    def refused(*args):
        raise RuntimeError("could not create a primitive")

    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", refused)
    twin = packed.load_packed_cnn14(load_cnn14(panns_model_dir / PannsCnn14.checkpoint.filename), precision)
    if precision == "bfloat16" and not packed.bfloat16_available():  # called only where the CPU runs it fast
        assert twin is not None and not twin.packed
        return
    assert twin is None
    assert f"cannot run in {precision} here (RuntimeError: could not create a primitive)" in caplog.text
    if precision == "bfloat16" or packed.float32_preferred():  # where auto would have taken this twin
        assert PannsCnn14(model_dir=panns_model_dir, runtime="auto").engine == "onnxruntime"
    with pytest.raises(ModelNotAvailable, match=f"cannot run in {precision}"):
        PannsCnn14(model_dir=panns_model_dir, runtime=precision).load()


def test_a_twin_is_refused_when_its_answers_on_the_probe_drift():
    from audiosim.embedders.probe import disagreement, probe

    rng = np.random.default_rng(0)
    expected = [rng.random((2, 2048), dtype=np.float32), rng.random((2, 527), dtype=np.float32)]
    assert probe().shape == (2, 64000)

    def twin_answering(embeddings, scores):
        return lambda batch: (embeddings, scores)

    assert disagreement(expected, twin_answering(*expected), 0.995, 0.02) is None
    assert disagreement(expected, twin_answering(expected[0] * 3, expected[1]), 0.995, 0.02) is None  # scale-free
    drifted = expected[0] + 0.2 * rng.random((2, 2048), dtype=np.float32)  # cosine about 0.99
    assert "embeddings differ" in disagreement(expected, twin_answering(drifted, expected[1]), 0.995, 0.02)
    assert "class scores" in disagreement(expected, twin_answering(expected[0], expected[1] + 0.05), 0.995, 0.02)
    broken = np.full_like(expected[0], np.nan)
    assert "embeddings differ" in disagreement(expected, twin_answering(broken, expected[1]), 0.995, 0.02)


def test_a_torn_onnx_cache_is_rebuilt_and_a_replaced_checkpoint_reexported(panns_model_dir, tmp_path, caplog):
    from audiosim.embedders import onnx_runtime

    folder = tmp_path / "models"
    shutil.copytree(panns_model_dir, folder, ignore=shutil.ignore_patterns("*.onnx"))
    checkpoint = folder / PannsCnn14.checkpoint.filename
    cached = onnx_runtime.cache_path(checkpoint)
    cached.write_bytes(b"\x08\x07 half a graph")
    window = [sound("noise", 2.0, seed=1)]
    expected = PannsCnn14(model_dir=folder, runtime="torch").embed(window).vectors
    fast = PannsCnn14(model_dir=folder, runtime="onnx")
    assert fast.engine == "onnxruntime" and float(fast.embed(window).vectors[0] @ expected[0]) > 0.9999
    assert cached.stat().st_size > 1_000_000
    os.utime(checkpoint, ns=(1, 1))  # a replaced checkpoint: the old export must not be used for it
    assert PannsCnn14(model_dir=folder, runtime="onnx").engine == "onnxruntime"
    assert not cached.exists() and onnx_runtime.cache_path(checkpoint).exists()


def test_panns_indexing_stores_audioset_tags(panns_model_dir, tmp_path, sounds):
    settings = Settings(str(tmp_path / "c.db"), str(tmp_path / "v.db"), model_dir=panns_model_dir)
    with AudioSim(settings) as sim:
        assert sim.embedder.name == "panns-cnn14"  # the default once its checkpoint is present
        sim.index([sounds])
        clip = sim.catalog.clip(1)
        tags = sim.catalog.tags(clip.id)
        assert len(tags) == 5 and all(tag in audioset_labels() for tag, _ in tags)
        assert [s for _, s in tags] == sorted((s for _, s in tags), reverse=True)
        assert sim.stats()["tags"] >= 5


class RecordingCnn14(PannsCnn14):
    """Cnn14 that notes, for each batch, the thread that ran it and how many cores its kernels had."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ran_on = []

    def embed_batch(self, batch):
        self.ran_on.append((threading.current_thread().name, torch.get_num_threads()))
        return super().embed_batch(batch)


def test_torch_on_a_cpu_runs_a_batch_a_core_on_its_workers_with_the_answers_of_one_at_a_time(panns_model_dir):
    windows = [sound(kind, 2.0, seed=i) for i, kind in enumerate(KINDS)]
    cores = torch.get_num_threads()
    alone = RecordingCnn14(model_dir=panns_model_dir, batch_size=len(windows), runtime="torch")
    want = alone.embed(windows)
    assert alone.ran_on == [(threading.current_thread().name, cores)]  # one batch: here, on every core

    spread = RecordingCnn14(model_dir=panns_model_dir, batch_size=2, runtime="torch")
    assert spread.workers() == cores
    got = spread.embed(windows)
    assert torch.get_num_threads() == cores  # the caller's own setting is untouched
    assert len(spread.ran_on) == 3
    if cores > 1:
        assert {name.startswith("audiosim-embed") for name, _ in spread.ran_on} == {True}
        assert {threads for _, threads in spread.ran_on} == {1}
    # A thread that starts using torch afterwards still gets every core (torch.set_num_threads in the workers
    # would have made 1 its default).
    later = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [cores]
    assert np.allclose(want.vectors, got.vectors, atol=1e-5)  # in the windows' order
    assert np.allclose(want.class_scores, got.class_scores, atol=1e-5)
    # ONNX Runtime spreads each batch over the cores itself.
    assert PannsCnn14(model_dir=panns_model_dir, runtime="onnx").workers() == 1


def test_an_index_run_on_the_workers_stores_each_window_its_own_vector(panns_model_dir, tmp_path, sounds):
    settings = Settings(str(tmp_path / "c.db"), str(tmp_path / "v.db"), model_dir=panns_model_dir, runtime="torch")
    with AudioSim(settings) as sim:
        sim.embedder.batch_size = 2  # batches hold windows of two files, several at once on the workers
        report = sim.index([sounds])
        assert len(report.indexed) == 6 and report.ok
        name = sim.collection().name
        for clip in sim.catalog.clips_with_status("ready"):
            segments = sim.catalog.segments(clip.id)
            stored = sim.store.vectors(name, [vid for vid, _, _ in segments])
            audio = load(clip.fs_path, 32000)
            windows = [audio[round(start * 32000) : round(end * 32000)] for _, start, end in segments]
            want = PannsCnn14(model_dir=panns_model_dir, runtime="torch").embed(windows).vectors
            assert np.allclose(np.stack([stored[vid] for vid, _, _ in segments]), want, atol=1e-4)


class TwoWorkerLogMel(LogMelStats):
    def workers(self) -> int:
        return 2


def test_a_forked_child_makes_workers_of_its_own(tmp_path):
    embedder = TwoWorkerLogMel(batch_size=1)
    windows = [sound(kind, 1.0, seed=i) for i, kind in enumerate(KINDS[:3])]
    want = embedder.embed(windows).vectors  # the parent's workers exist now; a fork copies the pool, not its threads
    out = tmp_path / "child.npy"
    child = multiprocessing.get_context("fork").Process(target=lambda: np.save(out, embedder.embed(windows).vectors))
    child.start()
    child.join(30)
    stuck = child.is_alive()
    if stuck:
        child.kill()
    assert not stuck and child.exitcode == 0
    assert np.allclose(np.load(out), want)


def test_panns_without_checkpoint_says_how_to_get_it(tmp_path):
    reason = PannsCnn14(model_dir=tmp_path).unavailable_reason()
    assert "audiosim models fetch panns-cnn14" in reason
    with pytest.raises(ModelNotAvailable, match="models fetch"):
        choose_embedder("panns-cnn14", None, tmp_path)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"not a checkpoint at all", "not a loadable checkpoint"),
        ("wrong-architecture", "not a Cnn14 checkpoint"),
        ("pickle-with-code", "not a loadable checkpoint"),
    ],
)
def test_bad_checkpoints_are_refused_clearly(tmp_path, content, message):
    path = tmp_path / "Cnn14_mAP=0.431.pth"
    if content == "wrong-architecture":
        torch.save({"model": {"fc1.weight": torch.zeros(3, 3)}}, path)
    elif content == "pickle-with-code":
        torch.save({"model": {}, "evil": os.system}, path)  # weights_only=True must refuse globals
    else:
        path.write_bytes(content)
    with pytest.raises(ModelNotAvailable, match=message):
        load_cnn14(path)


def test_aisfx_loads_its_shipped_weights():
    embedder = AiSfx()
    assert embedder.unavailable_reason() is None
    out = embedder.embed([sound("chirp", 2.3, seed=1), sound("noise", 1.0, seed=2)])
    assert out.vectors.shape == (2, 512) and out.class_scores is None
    assert float(out.vectors[0] @ out.vectors[1]) < 0.99


def test_dsp_is_deterministic_and_handles_silence():
    embedder = LogMelStats()
    a = embedder.embed([sound("tone", 2.0, seed=1), np.zeros(32000, np.float32)])
    b = embedder.embed([sound("tone", 2.0, seed=1), np.zeros(32000, np.float32)])
    assert np.array_equal(a.vectors, b.vectors)
    assert np.isfinite(a.vectors).all() and np.allclose(np.linalg.norm(a.vectors, axis=1), 1.0)


def test_loop_pad():
    assert np.array_equal(loop_pad(np.array([1, 2, 3], np.float32), 7), [1, 2, 3, 1, 2, 3, 1])
    assert loop_pad(np.zeros(0, np.float32), 4).shape == (4,)


def test_default_model_prefers_panns_then_aisfx(panns_model_dir, tmp_path):
    assert default_model_name(panns_model_dir) == "panns-cnn14"
    assert default_model_name(tmp_path) == "aisfx"
    statuses = {s.name: s for s in model_statuses(tmp_path)}
    assert statuses["dsp-logmel"].usable and not statuses["panns-cnn14"].usable


def test_a_catalog_is_bound_to_one_model(tmp_path, sounds, panns_model_dir):
    base = dict(catalog=str(tmp_path / "c.db"), milvus=str(tmp_path / "v.db"), model_dir=panns_model_dir)
    with AudioSim(Settings(**base, model="dsp-logmel")) as sim:
        sim.index([sounds])
    with AudioSim(Settings(**base)) as sim:  # no --model: the catalog's own, not the (present) panns default
        assert sim.embedder.name == "dsp-logmel"
        assert sim.search_file(sounds / "tone.wav", k=1)[0].clip.path.endswith("tone.wav")
    with AudioSim(Settings(**base, model="panns-cnn14")) as sim:
        with pytest.raises(ModelMismatch, match="built with dsp-logmel v1"):
            sim.index([sounds])
        with pytest.raises(ModelMismatch):
            sim.search_file(sounds / "tone.wav")


def test_unknown_model_lists_the_known_ones(tmp_path):
    with pytest.raises(ModelNotAvailable, match="known models: panns-cnn14, aisfx, dsp-logmel"):
        choose_embedder("no-such-model", None, tmp_path)


def test_short_clip_is_one_looped_window(tmp_path, lite_settings):
    write(tmp_path / "s" / "click.wav", sound("clicks", 0.1, seed=1))
    with AudioSim(lite_settings) as sim:
        sim.index([tmp_path / "s"])
        clip = sim.catalog.clip(1)
        assert clip.segment_count == 1 and clip.duration_s == pytest.approx(0.1, abs=0.01)
        assert sim.search_file(tmp_path / "s" / "click.wav", k=1)[0].score == pytest.approx(1.0, abs=1e-4)
