"""What the maintained line (``mars-cmbagent``) needs to run as a service.

Two things differ from upstream's releases in how a run behaves, not in
signatures (those are met in ``library.py``):

- **Plan steps.** Its control agent's ``record_status`` takes only the
  status; the step number, sub-task and agent are context variables that
  ``deep_research`` sets before each step's ``CMBAgent.solve(…, step=n)``.
  Its ``WorkflowCallbacks`` would carry ``StepInfo`` events, but 2.2.5's
  ``deep_research`` fires only the workflow-level ones (start, complete,
  failed). So the steps are taken where the library hands them over: the
  ``solve`` call of each step, its context going in and its
  ``final_context["step_status"]`` coming out (the values of its
  ``StepStatus``), turned into ``step.*`` events by
  ``mapping.EventMapper.library_step``.
- **The tokenizer.** Its executor-output truncation builds a ``tiktoken``
  encoding when a chat is set up, and tiktoken downloads the encoding file
  on first use. A runner without egress to that host (a cluster, an
  air-gapped site, the tests) would fail every task on a soft length budget,
  so when the file cannot be had the truncation counts in 4-character
  pieces instead (the library calls its own count an approximation).
  Deployments that can should pre-seed ``TIKTOKEN_CACHE_DIR``.

And two endpoints the library hard-codes, made settable like
``OPENAI_BASE_URL`` (a mirror, a proxy, the tests' local servers):
``CMBAGENT_ARXIV_URL`` for the papers its downloaders fetch from arXiv, and
``MISTRAL_BASE_URL`` for its OCR client.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import structlog

__all__ = [
    "ARXIV",
    "OfflineEncoding",
    "arxiv_mirror",
    "mistral_server",
    "offline_tokenizer",
    "step_reports",
    "track_steps",
]

log = structlog.get_logger("cmbtask_runner.engines.cmbagent")

#: (step number, context going in, final context or None while running) → None
StepListener = Callable[[int, dict[str, Any], dict[str, Any] | None], None]

_listener: StepListener | None = None
_WRAPPED = "_cmbtask_steps"


class OfflineEncoding:
    """Text in 4-character pieces: ``encode`` / ``decode`` round-trip exactly,
    and a piece is about one token of English text."""

    name = "cmbtask-offline-approximation"
    PIECE = 4

    def encode(self, text: str, **_: Any) -> list[str]:
        return [text[i : i + self.PIECE] for i in range(0, len(text), self.PIECE)]

    def decode(self, tokens: list[str], **_: Any) -> str:
        return "".join(tokens)


def offline_tokenizer(module: Any) -> None:
    """Give ``module`` (it did ``import tiktoken``) a tiktoken whose
    ``encoding_for_model`` falls back to ``OfflineEncoding`` when the real
    encoding's file cannot be fetched. Only this module's name is rebound:
    AG2 and everything else keep the real tiktoken."""
    real = getattr(module, "tiktoken", None)
    if real is None or getattr(real, _WRAPPED, False):
        return

    def encoding_for_model(model: str) -> Any:
        try:
            return real.encoding_for_model(model)
        except (OSError, ValueError) as error:  # requests' errors are OSErrors
            log.warning("cmbagent.tokenizer_offline", model=model, error=str(error)[:300])
            return OfflineEncoding()

    shim = SimpleNamespace(**{name: getattr(real, name) for name in dir(real) if not name.startswith("__")})
    shim.encoding_for_model = encoding_for_model
    setattr(shim, _WRAPPED, True)
    module.tiktoken = shim


ARXIV = "https://arxiv.org"


def arxiv_mirror(module: Any, base: str) -> None:
    """Send ``module``'s requests for arXiv to ``base`` instead (its other
    requests are untouched)."""
    real = getattr(module, "requests", None)
    if real is None or getattr(real, _WRAPPED, False) or not base:
        return
    base = base.rstrip("/")

    def get(url: str, *args: Any, **kwargs: Any) -> Any:
        if isinstance(url, str) and (url == ARXIV or url.startswith(ARXIV + "/")):
            url = base + url[len(ARXIV) :]
        return real.get(url, *args, **kwargs)

    shim = SimpleNamespace(**{name: getattr(real, name) for name in dir(real) if not name.startswith("__")})
    shim.get = get
    setattr(shim, _WRAPPED, True)
    module.requests = shim


def mistral_server(module: Any, url: str) -> None:
    """Make ``module``'s ``Mistral`` client talk to ``url``."""
    real = getattr(module, "Mistral", None)
    if real is None or getattr(real, _WRAPPED, False) or not url:
        return

    def client(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("server_url", url)
        return real(*args, **kwargs)

    setattr(client, _WRAPPED, True)
    module.Mistral = client


def step_reports(core: Any) -> None:
    """Wrap ``CMBAgent.solve`` so a listener hears each plan step the library
    runs (the releases that pass ``step=``; a no-op for the others)."""
    cls = core.CMBAgent
    if getattr(cls.solve, _WRAPPED, False):
        return
    original = cls.solve

    def solve(self: Any, task: Any, *args: Any, **kwargs: Any) -> Any:
        step, listener = kwargs.get("step"), _listener
        if listener is None or not isinstance(step, int):
            return original(self, task, *args, **kwargs)
        context = dict(kwargs.get("shared_context") or {})
        listener(step, context, None)
        result = original(self, task, *args, **kwargs)
        listener(step, context, dict(getattr(self, "final_context", None) or {}))
        return result

    setattr(solve, _WRAPPED, True)
    cls.solve = solve


@contextlib.contextmanager
def track_steps(listener: StepListener) -> Iterator[None]:
    """Send this run's library steps to ``listener``."""
    global _listener
    _listener = listener
    try:
        yield
    finally:
        _listener = None
