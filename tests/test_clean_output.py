"""Executed chapters carry no warning text and no library progress bars (issue 12): the
chapter runner starts each kernel with bertdims.book.chapters.KERNEL_ENV."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from bertdims.book.chapters import kernel_env, run_chapter

ROOT = Path(__file__).resolve().parents[1]


def _noise(nb) -> list[str]:
    """stderr outputs, and any output text that mentions a warning or a progress bar."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.output_type == "stream" else "".join(
                str(v) for k, v in out.get("data", {}).items() if k.startswith("text/plain"))
            if out.output_type == "stream" and out.name == "stderr":
                found.append(f"cell {i} stderr: {text[:200]}")
            elif "Warning" in text or "it/s]" in text or "%|" in text:
                found.append(f"cell {i}: {text[:200]}")
    return found


def test_kernel_libraries_are_quiet(tiny_bert, tmp_path):
    """What a fine-tuning chapter does in its kernel: tqdm.auto (the IProgress warning), a
    model loaded and saved by transformers (its weight bars), a warning from a library."""
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "from tqdm.auto import tqdm\nfor _ in tqdm(range(3)): pass",
        f"from transformers import AutoModel\nm = AutoModel.from_pretrained({tiny_bert!r})\n"
        f"m.save_pretrained({str(tmp_path / 'saved')!r})",
        "import warnings\nwarnings.warn('a FutureWarning from a library', FutureWarning)",
        "print('results only')",
    )]
    with kernel_env():
        NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    assert _noise(nb) == []
    assert nb.cells[-1].outputs[0].text == "results only\n"


@pytest.mark.slow
def test_executed_chapter_has_no_warning_text(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTDIMS_RESULTS", str(tmp_path / "results"))
    monkeypatch.chdir(ROOT)
    out = run_chapter("01", preset="smoke", out_dir=tmp_path / "out", root=ROOT, progress=False)
    nb = nbformat.read(str(out), as_version=4)
    assert _noise(nb) == []
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
