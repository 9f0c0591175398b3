"""The utility modes: one library function each, no agents' plan.

- ``arxiv``: ``arxiv_filter`` fetches the PDFs of the arXiv papers the prompt
  links into ``docs/``. No LLM is involved, so it needs no key.
- ``ocr``: the same papers, then ``process_single_pdf`` on each: Mistral's
  OCR service turns them into markdown (``MISTRAL_API_KEY``).
- ``enhance-input``: ``preprocess_task`` fetches the linked papers, reads
  them (OCR, when a Mistral key is set) and summarises them with its
  summariser agents; the task's result is the prompt with that context
  appended, also written to ``enhanced_input.md``.

A release lacking a function does not offer the mode (``modes.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base import EngineError
from .library import model_kwargs, supported_kwargs

if TYPE_CHECKING:
    from .workflows import Run

__all__ = ["arxiv", "enhance_input", "ocr"]

MAX_RESULT_TEXT = 100_000


def arxiv(run: Run) -> dict[str, Any]:
    report = _fetch(run)
    return {
        "downloaded": len(report["downloaded"]),
        "failed": len(report["failed"]),
        "files": report["downloaded"],
    }


def ocr(run: Run) -> dict[str, Any]:
    report = _fetch(run)
    pages = 0
    markdown: list[str] = []
    for pdf in report["downloaded"]:
        out = run.root / "ocr" / Path(pdf).stem
        result = run.function(str(run.root / pdf), output_dir=str(out), work_dir=str(run.root))
        pages += len((result or {}).get("pages", []) or [])
        markdown.extend(str(p.relative_to(run.root)) for p in sorted(out.rglob("*.md")))
    if not markdown:
        raise EngineError("OCR produced no markdown for the fetched papers")
    return {"documents": len(report["downloaded"]), "pages": pages, "markdown": markdown}


def enhance_input(run: Run) -> dict[str, Any]:
    """``preprocess_task`` on the prompt. Loose references ("Smith et al.
    2020") are not resolved: that asks a third-party service not configured
    here. Without a Mistral key the papers are not read, only fetched."""
    no_ocr = not os.environ.get("MISTRAL_API_KEY", "").strip()
    options = supported_kwargs(
        run.function, work_dir=str(run.root / "enhance"), clear_work_dir=True, skip_ocr=no_ocr,
        resolve_references=False,
    )  # fmt: skip
    enhanced = str(run.function(run.prompt, **options, **model_kwargs(run.function, run.lib.utils)))
    (run.root / "enhanced_input.md").write_text(enhanced, encoding="utf-8")
    return {
        "enhanced_input": enhanced[:MAX_RESULT_TEXT],
        "changed": enhanced.strip() != run.prompt.strip(),
        "ocr": not no_ocr,
    }


def _fetch(run: Run) -> dict[str, list[str]]:
    """The papers the prompt links, fetched into ``<work dir>/docs``."""
    report = run.lib.arxiv_filter(run.prompt, work_dir=str(run.root)) or {}
    found = list(report.get("urls_found") or [])
    if not found:
        raise EngineError("the prompt links no arXiv paper (https://arxiv.org/abs/… or /pdf/…)")
    downloaded = sorted(
        str(Path(path).resolve().relative_to(run.root.resolve()))
        for path in report.get("downloaded_files") or []
    )
    failed = [str(f.get("url", f)) for f in report.get("failed_downloads") or []]
    if not downloaded:
        raise EngineError(f"no linked paper could be fetched from arXiv ({len(failed)} failed)")
    return {"downloaded": downloaded, "failed": failed}
