"""Local stand-ins for the services the utility modes call: arXiv (what it
serves at ``/pdf/<id>``: a PDF, or a 404 page for an unknown paper) and
Mistral's OCR API (``POST /v1/ocr`` with a bearer key and the document as a
base64 data URL, answered with pages of markdown and ``usage_info``).

The PDFs are real, tiny, one-page documents whose text is the paper's
title; the OCR server "reads" a PDF by finding the text its page draws, so
a test can follow one paper's words from arXiv through OCR to the task's
markdown."""

from __future__ import annotations

import base64
import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from .openai_server import _free_port

__all__ = ["Papers", "one_page_pdf", "running_arxiv", "running_mistral_ocr"]

_DRAWN = re.compile(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj")


def one_page_pdf(text: str) -> bytes:
    """A valid one-page PDF that draws ``text`` (ASCII) in Helvetica."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 18 Tf 72 720 Td ({escaped}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@dataclass
class Papers:
    """The papers the fake arXiv has, by id, and what was asked of it."""

    titles: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


def arxiv_app(papers: Papers) -> FastAPI:
    app = FastAPI(title="fake arxiv")

    @app.get("/pdf/{paper_id:path}")
    async def pdf(paper_id: str) -> Response:
        papers.requests.append(paper_id)
        title = papers.titles.get(paper_id.removesuffix(".pdf"))
        if title is None:
            return HTMLResponse(f"<h1>Article identifier '{paper_id}' not recognized</h1>", status_code=404)
        return Response(one_page_pdf(title), media_type="application/pdf")

    return app


@dataclass
class OcrLedger:
    calls: list[dict[str, Any]] = field(default_factory=list)


def mistral_app(ledger: OcrLedger) -> FastAPI:
    app = FastAPI(title="fake mistral ocr")

    @app.post("/v1/ocr")
    async def process(request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
            return JSONResponse({"message": "Unauthorized", "request_id": "fake"}, status_code=401)
        body = await request.json()
        url = str((body.get("document") or {}).get("document_url", ""))
        prefix = "data:application/pdf;base64,"
        if not url.startswith(prefix):
            return JSONResponse({"object": "error", "message": "document_url must be a PDF"}, status_code=422)
        data = base64.b64decode(url[len(prefix) :])
        if not data.startswith(b"%PDF-"):
            return JSONResponse({"object": "error", "message": "not a PDF document"}, status_code=422)
        lines = [m.group(1).decode("latin-1") for m in _DRAWN.finditer(data)]
        ledger.calls.append({"model": body.get("model"), "key_suffix": auth[-6:], "bytes": len(data)})
        page = {
            "index": 0,
            "markdown": "\n\n".join(f"# {line}" for line in lines) or "",
            "images": [],
            "dimensions": {"dpi": 200, "height": 2200, "width": 1700},
        }
        return JSONResponse(
            {
                "pages": [page],
                "model": body.get("model") or "mistral-ocr-latest",
                "usage_info": {"pages_processed": 1, "doc_size_bytes": len(data)},
                "document_annotation": None,
            }
        )

    return app


@contextlib.contextmanager
def _serving(app: FastAPI, name: str) -> Iterator[str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def running_arxiv(papers: Papers) -> Iterator[str]:
    """The base URL to give as ``CMBAGENT_ARXIV_URL``."""
    with _serving(arxiv_app(papers), "fake-arxiv") as url:
        yield url


@contextlib.contextmanager
def running_mistral_ocr(ledger: OcrLedger) -> Iterator[str]:
    """The base URL to give as ``MISTRAL_BASE_URL``."""
    with _serving(mistral_app(ledger), "fake-mistral") as url:
        yield url
