"""The Files API snippets of the Gemini docs run unchanged against the emulator (base_url and key aside).

The snippets live verbatim in ``seed_snippets.txt``; when the docs themselves are at hand
(``../shared/seeds``) the test first checks that every snippet still appears there word for word.
Notebook shell lines (``!curl ...``) are dropped: the files they would download are prepared here.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import types as pytypes
from pathlib import Path
from typing import Any

import pytest

from airflow_gemini_files.emulator import GeminiEmulator

from .test_generate import jpeg_bytes, png_bytes

SNIPPETS = Path(__file__).with_name("seed_snippets.txt")
SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"
KEY_EXPR = 'genai.Client(api_key="GOOGLE_API_KEY")'


def load_snippets() -> list[tuple[str, str, str]]:
    """(seed file, title, code) in document order."""
    found = re.findall(r"^### (\S+) \| (.+?)\n(.*?)(?=^### |\Z)", SNIPPETS.read_text(), re.S | re.M)
    return [(seed, title, code.rstrip() + "\n") for seed, title, code in found]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The files the snippets name, in a fresh working directory."""
    (tmp_path / "path" / "to").mkdir(parents=True)
    (tmp_path / "path" / "to" / "sample.mp3").write_bytes(
        b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb" * 500
    )
    (tmp_path / "path" / "to" / "image1.jpg").write_bytes(jpeg_bytes(320, 200))
    (tmp_path / "path" / "to" / "image2.png").write_bytes(png_bytes(64, 48))
    (tmp_path / "image.jpg").write_bytes(jpeg_bytes(800, 600))
    (tmp_path / "contrib.md").write_text("# Contributing\n\nSign the CLA before you start writing.\n")
    pkg = tmp_path / "python-genai" / "google" / "genai"
    pkg.mkdir(parents=True)
    (pkg / "client.py").write_text("class Client:\n    pass\n")
    (pkg / "files.py").write_text("def upload():\n    return None\n")
    (tmp_path / "python-genai" / "tests").mkdir()
    (tmp_path / "python-genai" / "tests" / "test_files.py").write_text("def test(): pass\n")
    monkeypatch.chdir(tmp_path)
    # The Markdown snippet imports IPython.display (a notebook); a two-name stand-in is enough.
    display_mod: Any = pytypes.ModuleType("IPython.display")
    display_mod.Markdown = lambda text: text
    ipython: Any = pytypes.ModuleType("IPython")
    ipython.display = display_mod
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_mod)
    return tmp_path


def test_snippets_are_verbatim_copies_of_the_docs() -> None:
    snippets = load_snippets()
    assert len(snippets) == 12
    if not SEEDS.is_dir():  # a clone without the docs beside it: nothing to compare with
        return
    for seed, title, code in snippets:
        assert code.rstrip() in (SEEDS / seed).read_text(), f"{seed}: {title} changed"


def test_seed_snippets_run_against_the_emulator(gemini_emulator: GeminiEmulator, workdir: Path) -> None:
    from google import genai

    shown: list[str] = []
    namespace: dict[str, Any] = {
        "__name__": "seed",
        # 002 builds its client from a Colab secret; every other snippet builds it as the docs show.
        "client": genai.Client(api_key="test-api-key", http_options={"base_url": gemini_emulator.base_url}),
        "display": shown.append,
    }
    outputs: dict[str, str] = {}
    base = gemini_emulator.base_url
    for seed, title, code in load_snippets():
        assert code.count(KEY_EXPR) <= 1
        code = code.replace(
            KEY_EXPR, f'genai.Client(api_key="test-api-key", http_options={{"base_url": "{base}"}})'
        )
        code = "\n".join(line for line in code.splitlines() if not line.startswith(("!", "%")))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{seed}: {title}", "exec"), namespace)
        outputs[title] = out.getvalue()

    assert "file files/" in outputs["upload a file and generate"]
    assert "(audio/mpeg," in outputs["upload a file and generate"]
    assert "state=<FileState.ACTIVE" in outputs["get metadata"]
    assert outputs["list files"].startswith("My files:\n  files/")
    assert "image 800x600 px" in outputs["generate with one file"]
    assert outputs["upload several files with display names"] == ".."  # the tests/ file is skipped
    displayed = [f.display_name for f in namespace["files"] if not isinstance(f, str)]
    assert sorted(displayed) == ["python-genai/google/genai/client.py", "python-genai/google/genai/files.py"]
    assert "'CONTRIBUTING.md' (text/markdown" in shown[0]
    assert "first line: '# Contributing'" in shown[0]
    assert outputs["delete file"].startswith("Deleted files/")
    mixed = outputs["uploaded file mixed with inline bytes"]
    assert "image 320x200 px" in mixed
    assert "inline data (image/png" in mixed
    assert "image 64x48 px" in mixed
    # uploaded: sample.mp3 x3 (one deleted), image.jpg (deleted), 2 .py files, contrib.md, image1.jpg
    assert gemini_emulator.stats()["files"] == 6
