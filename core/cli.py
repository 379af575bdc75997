"""The ``audiosim`` command: options and printing only; the work is in ``service.AudioSim``."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
from pathlib import Path

import click

from .errors import AudioSimError
from .settings import DEFAULT_CATALOG, RUNTIMES, Settings

ENV_PREFIX = "AUDIOSIM_"


def _quiet_third_party_logs():
    # pymilvus and milvus-lite log expected conditions (a locked store, iterator timestamps) as warnings with
    # tracebacks; we report those ourselves in one clear line. Import first: pymilvus sets its levels on import.
    import pymilvus  # noqa: F401

    for name in ("pymilvus", "milvus_lite"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


model_dir_option = click.option(
    "--model-dir",
    envvar="AUDIOSIM_MODEL_DIR",
    type=click.Path(path_type=Path),
    default=lambda: str(Path.home() / "panns_data"),
    show_default="~/panns_data",
    help="Folder holding model checkpoints",
)


def store_options(fn):
    """--catalog, --milvus, --milvus-token, --model, --model-dir, --runtime: each also from an AUDIOSIM_ variable."""
    options = [
        click.option(
            "--catalog",
            envvar="AUDIOSIM_CATALOG",
            default=DEFAULT_CATALOG,
            show_default=True,
            help="SQLite file, or mysql://user:password@host:port/database",
        ),
        click.option(
            "--milvus",
            envvar="AUDIOSIM_MILVUS",
            default=None,
            help="Milvus Lite path (*.db) or server URI http://host:19530  [default: beside the catalog]",
        ),
        click.option("--milvus-token", envvar="AUDIOSIM_MILVUS_TOKEN", default=None, help="Milvus server token"),
        click.option(
            "--model",
            envvar="AUDIOSIM_MODEL",
            default=None,
            help="Embedder name (see: audiosim models)  [default: the catalog's, else the best usable]",
        ),
        model_dir_option,
        click.option(
            "--runtime",
            envvar="AUDIOSIM_RUNTIME",
            type=click.Choice(RUNTIMES),
            default="auto",
            show_default=True,
            help="Engine for neural models: auto = torch on a GPU; on CPU bfloat16 where it has AMX or AVX-512 "
            "BF16, float32 (torch on oneDNN's packed kernels) where it has AVX-512 or AVX2 without them, else ONNX "
            "Runtime; int8 = ONNX Runtime with 8-bit convolutions (faster, checked looser; only when asked for)",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)

    @functools.wraps(fn)
    def wrapper(catalog, milvus, milvus_token, model, model_dir, runtime, **kwargs):
        settings = Settings(catalog, milvus, milvus_token, model, Path(model_dir).expanduser(), runtime=runtime)
        return fn(settings=settings, **kwargs)

    return wrapper


def open_service(settings: Settings):
    from .service import AudioSim

    return AudioSim(settings)


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _quiet_third_party_logs()
        try:
            return fn(*args, **kwargs)
        except AudioSimError as e:
            raise click.ClickException(str(e)) from e

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="datasette-audiosim")
def cli():
    """Audio similarity search: index a folder of sounds, then find sounds like a file or a clip.

    \b
    audiosim index ~/sounds
    audiosim search query.wav -n 10
    audiosim similar 42
    """


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON")
@click.option(
    "--hop",
    envvar="AUDIOSIM_HOP",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Seconds between window starts, for a new catalog (an existing one keeps its own). A hop as long as "
    "the window embeds each second once: half the model work and vectors of the default, matches located to "
    "within a window  [default: 1 s]",
)
@store_options
@handle_errors
def index(settings, paths, as_json, hop):
    """Index audio files and folders (recursively).

    Unchanged files are skipped, changed files re-embedded, moved files keep their
    identity. A file that cannot be decoded is reported and never stops the run;
    the exit code is 1 when any file failed.

    \b
    audiosim index ~/sounds
    audiosim index a.wav b.flac --catalog sfx.db
    """
    from tqdm import tqdm

    with open_service(dataclasses.replace(settings, hop_s=hop)) as service:
        collection = service.collection()
        _say(f"model: {collection.identity}, windows of {collection.windows}")
        with tqdm(desc="indexing", unit="file", file=sys.stderr, disable=as_json or None) as bar:
            report = service.index(paths, progress=lambda _path: bar.update(1))
        # What embedded, as `audiosim models compare` names engines; None when nothing was, rather than load a model.
        engine = service.embedder.engine if report.indexed else None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "indexed": len(report.indexed),
                    "skipped": len(report.skipped),
                    "moved": len(report.moved),
                    "failed": [{"path": p, "reason": r} for p, r in report.failed],
                    "segments": report.segments,
                    "audio_s": round(report.audio_s, 3),
                    "model": collection.identity,
                    "engine": engine,
                }
            )
        )
    else:
        click.echo(
            f"indexed {len(report.indexed)} ({report.audio_s:.1f} s of audio, {report.segments} segments), "
            f"skipped {len(report.skipped)} unchanged, moved {len(report.moved)}, failed {len(report.failed)}"
        )
        for path, reason in report.failed:
            click.echo(f"  failed: {path}: {reason}")
    if report.failed:
        sys.exit(1)


def _print_matches(matches, as_json, heading):
    if as_json:
        for rank, match in enumerate(matches, 1):
            click.echo(json.dumps({"rank": rank, **match.to_dict()}, ensure_ascii=False))
        return
    click.echo(heading)
    if not matches:
        click.echo("  (no matches)")
    for rank, match in enumerate(matches, 1):
        click.echo(f"{rank:>4}  {match.score:.4f}  {_time(match.offset_s):>9}  {match.clip.id:>6}  {match.clip.path}")


def _time(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}:{secs:04.1f}"


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-n", "--limit", default=10, show_default=True, type=click.IntRange(1, 1000), help="Results per query")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result line")
@store_options
@handle_errors
def search(settings, files, limit, as_json):
    """Find the clips most like each query FILE (the model loads once for all of them).

    Columns: rank, score (cosine, 1 = identical), offset of the best
    matching moment in the clip (m:ss), clip id, path.

    \b
    audiosim search query.wav
    audiosim search a.wav b.mp3 -n 5 --json
    """
    with open_service(settings) as service:
        _say(f"model: {service.embedder.identity}")
        for file in files:
            matches = service.search_file(file, k=limit)
            _print_matches(matches, as_json, f"{file}:")


@cli.command()
@click.argument("clip_id", type=int)
@click.option("-n", "--limit", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result line")
@store_options
@handle_errors
def similar(settings, clip_id, limit, as_json):
    """More like catalog clip CLIP_ID (uses its stored vectors: no decoding).

    \b
    audiosim similar 42 -n 10
    """
    with open_service(settings) as service:
        clip = service.catalog.clip(clip_id)
        _print_matches(service.similar(clip_id, k=limit), as_json, f"like clip {clip_id} ({clip.path}):")


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@model_dir_option
@click.pass_context
def models(ctx, as_json, model_dir):
    """List the embedders, whether each is usable here, and why not.

    \b
    audiosim models
    audiosim models fetch panns-cnn14
    """
    ctx.obj = {"model_dir": Path(model_dir).expanduser()}
    if ctx.invoked_subcommand is not None:
        return
    from .models import model_statuses

    statuses = model_statuses(ctx.obj["model_dir"])
    default = next((s.name for s in statuses if s.usable), None)
    for status in statuses:
        if as_json:
            click.echo(json.dumps({**status.__dict__, "usable": status.usable, "default": status.name == default}))
            continue
        mark = "*" if status.name == default else " "
        state = "usable" if status.usable else f"not usable: {status.problem}"
        click.echo(
            f"{mark} {status.name:<12} v{status.version}  {status.dim:>4}-d  {status.sample_rate} Hz  "
            f"{status.description}\n      {state}"
        )
    if not as_json:
        click.echo("* = the default for new catalogs")


@models.command()
@click.argument("name")
@click.option("--url", help="Download from this mirror instead of the published URL (checksum still applies)")
@click.pass_context
@handle_errors
def fetch(ctx, name, url):
    """Download a model checkpoint: progress bar, MD5 check, resumable.

    \b
    audiosim models fetch panns-cnn14
    """
    from tqdm import tqdm

    from .weights import CHECKPOINTS
    from .weights import fetch as download

    if name not in CHECKPOINTS:
        raise click.UsageError(f"No checkpoint to fetch for {name!r}; fetchable: {', '.join(CHECKPOINTS)}")
    checkpoint = CHECKPOINTS[name]
    with tqdm(unit="B", unit_scale=True, desc=checkpoint.filename, file=sys.stderr) as bar:

        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        path = download(checkpoint, ctx.obj["model_dir"], url=url, progress=progress)
    click.echo(f"{name}: {path} (md5 {checkpoint.md5} verified)")


@models.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--runtime", "candidate", required=True, type=click.Choice(RUNTIMES), help="The engine to try")
@click.option("--against", default="torch", show_default=True, type=click.Choice(RUNTIMES), help="The engine to trust")
@click.option("--model", default="panns-cnn14", show_default=True)
@click.option("--windows", default=256, show_default=True, type=click.IntRange(2, 2048), help="How many to embed")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def compare(ctx, paths, candidate, against, model, windows, as_json):
    """Compare two engines of a model on your own recordings: how close their embeddings stay, whether search
    sees the same neighbours, and how long each takes. Worth running before indexing with --runtime int8,
    whose load-time check only uses a synthetic probe.

    \b
    audiosim models compare ~/sounds --runtime int8
    audiosim models compare ~/sounds --runtime bfloat16 --against onnx --windows 512
    """
    from .engines import compare_engines

    result = compare_engines(model, ctx.obj["model_dir"], paths, candidate, against, max_windows=windows)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result)))
        return
    for path, problem in result.failed:
        click.echo(f"skipped {path}: {problem}", err=True)
    click.echo(
        f"{result.model} on {result.windows} windows from {result.files} files: "
        f"{result.candidate} against {result.reference}\n"
        f"  embedding cosine: min {result.min_cosine:.4f}, mean {result.mean_cosine:.4f}\n"
        f"  of each window's {result.k} nearest others, shared: {result.shared_neighbours:.1%}; "
        f"same nearest: {result.same_nearest:.1%}\n"
        f"  time: {result.candidate_s:.2f} s against {result.reference_s:.2f} s "
        f"({result.reference_s / max(result.candidate_s, 1e-9):.2f}x)"
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@store_options
@handle_errors
def stats(settings, as_json):
    """What the catalog holds: clips, segments, audio hours, failures, model, vectors."""
    with open_service(settings) as service:
        data = service.stats()
    if as_json:
        click.echo(json.dumps(data))
        return
    for key, value in data.items():
        if key == "duration_s":
            key, value = "audio", f"{value / 3600:.2f} h"
        click.echo(f"{key:>10}: {value}")


@cli.command()
@click.option("--repair", is_flag=True, help="Fix what does not agree (re-index, delete orphans)")
@store_options
@handle_errors
def verify(settings, repair):
    """Check that the catalog and the vector store agree; exit 1 if they do not.

    \b
    audiosim verify
    audiosim verify --repair
    """
    with open_service(settings) as service:
        report = service.verify(repair=repair)
        for line in report.repaired:
            click.echo(f"repaired: {line}")
        if repair and report.repaired:
            report = service.verify()
    for problem in report.problems:
        click.echo(f"problem: {problem}")
    for path in report.missing_files:
        click.echo(f"missing file (remove it with audiosim remove): {path}")
    click.echo(f"{report.clips} clips, {report.vectors} vectors, {len(report.problems)} problems")
    if report.problems:
        sys.exit(1)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@store_options
@handle_errors
def remove(settings, paths):
    """Remove clips (files, or every clip under a folder) from the catalog and vector store.

    \b
    audiosim remove ~/sounds/old.wav ~/sounds/rejects
    """
    with open_service(settings) as service:
        removed = service.remove(paths)
    click.echo(f"removed {len(removed)} clips")


@cli.command()
@click.argument("folder", default="audiosim-demo", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", envvar="AUDIOSIM_MODEL", default=None, help="Embedder  [default: the best usable]")
@model_dir_option
@handle_errors
def demo(folder, model, model_dir):
    """Build a small demo catalog offline (generated sounds) and search it.

    \b
    audiosim demo
    audiosim demo /tmp/demo --model dsp-logmel
    """
    from .service import AudioSim
    from .synth import SR, collage, demo_corpus, write

    sounds = folder / "sounds"
    demo_corpus(sounds)
    query = write(folder / "query-excerpt.wav", collage(120.0, seed=7)[int(37.0 * SR) : int(39.0 * SR)])
    catalog = folder / "audiosim.db"
    settings = Settings(str(catalog), model=model, model_dir=Path(model_dir).expanduser())
    with AudioSim(settings) as service:
        collection = service.collection()
        _say(f"model: {collection.identity}")
        report = service.index([sounds])
        click.echo(
            f"indexed {len(report.indexed)}, skipped {len(report.skipped)} unchanged, failed {len(report.failed)}"
        )
        matches = service.search_file(query, k=5)
    _print_matches(matches, False, f"\nsearch {query} (a 2 s excerpt from 0:37 of the field recording):")
    rel = os.path.relpath(catalog)
    click.echo(
        f"\nNext:\n  audiosim search YOUR.wav --catalog {rel}\n  audiosim similar 1 --catalog {rel}\n  datasette {rel}"
    )


@cli.command("label-studio-backend")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("-p", "--port", default=9090, show_default=True, type=int)
def label_studio_backend(host, port):
    """Serve the Label Studio ML backend (settings from AUDIOSIM_* and LABEL_STUDIO_* variables).

    \b
    audiosim label-studio-backend --port 9090
    """
    try:
        from labelstudio_backend.app import main
    except ImportError as e:
        raise click.ClickException(
            f"The Label Studio backend is not installed ({e.name} missing): "
            "pip install 'datasette-audiosim[labelstudio]' && pip install --no-deps label-studio-ml==1.0.9"
        ) from e
    main(host, port)


def _say(text: str) -> None:
    click.echo(text, err=True)
