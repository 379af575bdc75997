"""What `pip install datasette-audiosim` gets: the `audiosim` package (never a bare `core`), its data, and no
label-studio-ml (whose Flask/Jinja2 pins would downgrade what Datasette renders with)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_base_install_does_not_pull_label_studio_ml():
    requirements = metadata.requires("datasette-audiosim")
    base = [r for r in requirements if "extra ==" not in r]
    assert not [r for r in base if r.lower().startswith(("label-studio", "flask", "jinja2", "werkzeug"))]
    # The backend's extra brings current Flask/Werkzeug/Jinja2, never label-studio-ml's vulnerable pins.
    extra = [r for r in requirements if 'extra == "labelstudio"' in r]
    assert any(r.lower().startswith("flask>=3") for r in extra)
    assert not any(r.lower().startswith("label-studio-ml") for r in requirements)


def test_console_script_and_datasette_entry_point():
    entry_points = metadata.distribution("datasette-audiosim").entry_points
    assert {(e.group, e.name, e.value) for e in entry_points} >= {
        ("console_scripts", "audiosim", "audiosim.cli:cli"),
        ("datasette", "audiosim", "datasette_audiosim"),
    }


def test_wheel_holds_audiosim_with_its_label_list_and_no_top_level_core(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("datasette_audiosim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "audiosim/data/audioset_class_labels_indices.csv" in names
    assert "audiosim/embedders/cnn14.py" in names and "audiosim/py.typed" in names
    assert not [n for n in names if n.startswith("core/")]
