"""The utility modes against local stand-ins for arXiv and Mistral's OCR API:
what a user submits (a prompt that links papers) and gets back (the PDFs,
their markdown, the prompt with the papers' context)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway import GatewayProcess

from .conftest import DUMMY_KEY, local_gateway, task_dir
from .driving import run_task
from .paper_servers import OcrLedger, Papers, running_arxiv, running_mistral_ocr
from .releases import require_mode

pytestmark = pytest.mark.cmbagent

MISTRAL_KEY = "mistral-cmbtask-test-222222"
KNOWN, UNKNOWN = "2401.00001", "2401.99999"
TITLE = "Fuzzy dark matter and little red dots"
PROMPT = f"Use https://arxiv.org/abs/{KNOWN} and https://arxiv.org/pdf/{UNKNOWN} for the CMB question."


@pytest.fixture(scope="module")
def services(fake_openai: tuple[str, object]) -> Iterator[tuple[str, Papers, str, OcrLedger]]:
    papers, ledger = Papers(titles={KNOWN: TITLE}), OcrLedger()
    with running_arxiv(papers) as arxiv_url, running_mistral_ocr(ledger) as mistral_url:
        yield arxiv_url, papers, mistral_url, ledger


@pytest.fixture(scope="module")
def gateway(
    fake_openai: tuple[str, object],
    services: tuple[str, Papers, str, OcrLedger],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    arxiv_url, _papers, mistral_url, _ledger = services
    data = tmp_path_factory.mktemp("utilities")
    process = local_gateway(
        data,
        # the gateway's own keys are the runners' (an admin's opt-in; users' own: test_budget.py)
        CMBTASK_PROVIDER_KEYS_FALLBACK="true",
        OPENAI_API_KEY=DUMMY_KEY,
        OPENAI_BASE_URL=fake_openai[0],
        CMBAGENT_MODEL="gpt-4.1-2025-04-14",
        CMBAGENT_ARXIV_URL=arxiv_url,
        MISTRAL_API_KEY=MISTRAL_KEY,
        MISTRAL_BASE_URL=mistral_url,
    ).start(timeout_s=60)
    yield process
    process.stop()


@pytest.fixture
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def test_arxiv_fetches_the_linked_papers(
    http: httpx.Client, gateway: GatewayProcess, services: tuple[str, Papers, str, OcrLedger]
) -> None:
    require_mode("arxiv")
    run = run_task(http, "arxiv", PROMPT, {}, timeout_s=120)
    assert run.final["type"] == "task.succeeded", run.final["data"]
    result = run.final["data"]["result"]
    assert (result["downloaded"], result["failed"]) == (1, 1)
    assert {KNOWN, UNKNOWN} <= set(services[1].requests)
    pdf = task_dir(gateway, run.task_id) / "cmbagent" / "docs" / f"{KNOWN}.pdf"
    assert pdf.read_bytes().startswith(b"%PDF-") and TITLE.encode() in pdf.read_bytes()
    assert f"cmbagent/docs/{KNOWN}.pdf" in {e["data"]["path"] for e in run.of("file.created")}


def test_arxiv_without_a_link_says_so(http: httpx.Client) -> None:
    require_mode("arxiv")
    run = run_task(http, "arxiv", "No papers here.", {}, timeout_s=120)
    assert run.final["type"] == "task.failed"
    assert "links no arXiv paper" in run.final["data"]["reason"]


def test_ocr_turns_the_papers_into_markdown(
    http: httpx.Client, gateway: GatewayProcess, services: tuple[str, Papers, str, OcrLedger]
) -> None:
    require_mode("ocr")
    before = len(services[3].calls)
    run = run_task(http, "ocr", PROMPT, {}, timeout_s=120)
    assert run.final["type"] == "task.succeeded", run.final["data"]
    calls = services[3].calls[before:]
    assert len(calls) == 1 and calls[0]["key_suffix"] == MISTRAL_KEY[-6:]
    markdown = run.final["data"]["result"]["markdown"]
    assert markdown
    texts = [(task_dir(gateway, run.task_id) / "cmbagent" / path).read_text() for path in markdown]
    assert any(TITLE in text for text in texts)
    assert MISTRAL_KEY not in str(run.events)


def test_enhance_input_appends_the_papers_context(http: httpx.Client, gateway: GatewayProcess) -> None:
    require_mode("enhance-input")
    run = run_task(http, "enhance-input", PROMPT, {}, timeout_s=240)
    assert run.final["type"] == "task.succeeded", run.final["data"]
    result = run.final["data"]["result"]
    assert result["ocr"] is True and result["changed"] is True
    enhanced = result["enhanced_input"]
    assert enhanced.startswith(PROMPT.split(" for ")[0]) or PROMPT in enhanced
    saved = task_dir(gateway, run.task_id) / "cmbagent" / "enhanced_input.md"
    assert saved.read_text() == enhanced
