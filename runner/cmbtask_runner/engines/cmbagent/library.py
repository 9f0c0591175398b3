"""Loading cmbagent in the runner: credentials, models, and the releases' quirks.

cmbagent reads its API keys from the environment *at import time* and keeps
per-agent model choices in module-level tables, so everything here happens
once, before or right after the first import, in the task's own process
(which is why mutating the library's globals is safe: no other task shares
them).

Configuration comes from the deployment, never from the task body:

- ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY`` / ``GEMINI_API_KEY`` /
  ``MISTRAL_API_KEY``: read by cmbagent itself; ``OPENAI_BASE_URL`` redirects
  every OpenAI agent (an OpenAI-compatible proxy or a test server).
- ``CMBAGENT_MODEL``: a model for every agent whose default needs a provider
  without a key (e.g. the Claude plan reviewer when only OpenAI is set up).
- ``CMBAGENT_MODELS``: JSON ``{"agent": "model", …}`` overriding single agents
  (a Claude model sends that agent to Anthropic, ``ANTHROPIC_BASE_URL`` too).
- ``CMBAGENT_ARXIV_URL`` / ``MISTRAL_BASE_URL``: mirrors for the utility
  modes' arXiv downloads and OCR client (``adapters.py``).

The supported releases (``modes.SUPPORTED_RELEASES``) differ in signatures,
not in how they run: post63's ``get_model_config`` takes the API keys, its
workflows and ``CMBAgent`` grew optional parameters. Those differences are
met by looking at the installed functions (``model_config``,
``supported_kwargs``), not by comparing version strings; which *modes* a
release has is decided in ``modes.py``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog

from ..base import EngineError
from . import adapters

__all__ = [
    "KEY_VARIABLES",
    "configured_providers",
    "exported_names",
    "fallback_model",
    "import_cmbagent",
    "installed_release",
    "installed_version",
    "is_installed",
    "key_reason",
    "missing_keys",
    "model_config",
    "model_kwargs",
    "model_overrides",
    "parameters_of",
    "provider_of",
    "supported_kwargs",
    "unavailable_reason",
]

log = structlog.get_logger("cmbtask_runner.engines.cmbagent")

#: provider name (cmbagent's ``api_type``) → the variable holding its key
KEY_VARIABLES = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "google": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
}
DEFAULT_FALLBACK_MODEL = "gpt-4.1-2025-04-14"

_loaded: ModuleType | None = None


def is_installed() -> bool:
    return importlib.util.find_spec("cmbagent") is not None


#: the distributions that install the ``cmbagent`` package: upstream's, then
#: the maintained line's (mars-cmbagent, which imports as ``cmbagent`` too)
DISTRIBUTIONS = ("cmbagent", "mars-cmbagent")


def installed_version() -> str | None:
    """The installed release, read from its metadata (no import)."""
    for distribution in DISTRIBUTIONS:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def installed_release() -> str | None:
    """The installed release as users name it: "cmbagent 0.0.1.post63",
    "mars-cmbagent 2.2.5"."""
    version = installed_version()
    if version is None:
        return None
    try:
        importlib.metadata.version("mars-cmbagent")
    except importlib.metadata.PackageNotFoundError:
        return f"cmbagent {version}"
    return f"mars-cmbagent {version}"


def exported_names() -> frozenset[str] | None:
    """What the installed ``cmbagent`` package binds at its top level, read from
    its ``__init__.py`` without importing it (an import takes seconds, opens
    network clients and prints a logo), or None when there is nothing to read."""
    try:
        spec = importlib.util.find_spec("cmbagent")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    return frozenset(_bound_names(tree.body))


def _bound_names(statements: list[ast.stmt]) -> Iterator[str]:
    for node in statements:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield from ((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node.name
        elif isinstance(node, ast.Assign):
            yield from (target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.If):
            # imports guarded by a condition or a try still bind at module level
            yield from _bound_names(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _bound_names(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                yield from _bound_names(handler.body)


def unavailable_reason() -> str | None:
    """Why no cmbagent task can run in this process's environment, or None."""
    if not is_installed():
        return "the cmbagent extra is not installed in this runner (pip install 'cmbtask[cmbagent]')"
    if not configured_providers():
        return f"no LLM API key is configured for the runner: set one of {', '.join(KEY_VARIABLES.values())}"
    return None


def missing_keys(keys: tuple[str, ...] | None) -> list[str]:
    """The key variables of which one must be set for a mode that needs
    ``keys`` (None: any LLM provider's; empty: none), or [] if it has one."""
    if keys is None:
        return [] if configured_providers() else list(KEY_VARIABLES.values())
    if not keys or any(os.environ.get(variable, "").strip() for variable in keys):
        return []
    return list(keys)


def key_reason(keys: tuple[str, ...] | None) -> str | None:
    """Why a mode that needs ``keys`` cannot run for want of a key, or None."""
    missing = missing_keys(keys)
    if not missing:
        return None
    if keys is None:
        return f"no LLM API key is configured for the runner: set one of {', '.join(missing)}"
    return f"needs {' or '.join(missing)} (not set for the runner)"


def configured_providers() -> list[str]:
    return [name for name, variable in KEY_VARIABLES.items() if os.environ.get(variable, "").strip()]


def fallback_model() -> str:
    return os.environ.get("CMBAGENT_MODEL", "").strip() or DEFAULT_FALLBACK_MODEL


def model_overrides() -> dict[str, str]:
    raw = os.environ.get("CMBAGENT_MODELS", "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise EngineError('CMBAGENT_MODELS is not valid JSON (expected {"agent": "model"})') from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise EngineError("CMBAGENT_MODELS must map agent names to model names")
    return {str(agent): model for agent, model in value.items()}


def model_config(utils: Any, model: str) -> dict[str, Any]:
    """``utils.get_model_config`` of either release: post63 takes the API keys
    as a second argument (post30 reads them from the environment itself)."""
    get = utils.get_model_config
    if "api_keys" in inspect.signature(get).parameters:
        config: dict[str, Any] = get(model, utils.get_api_keys_from_env())
    else:
        config = get(model)
    return config


def provider_of(utils: Any, model: str) -> str | None:
    """The provider whose key ``model`` needs (cmbagent's ``api_type`` names).

    Upstream's ``get_model_config`` tells it by the model's name. The
    maintained line's routes a model no configured provider claims to the
    active one (a Gemini model with only an OpenAI key gets ``api_type``
    "openai" and would be sent to OpenAI under its Gemini name), so the
    name decides first, with the same rules both lines' configs use.
    """
    lowered = model.lower()
    if "claude" in lowered:
        return "anthropic"
    if "gemini" in lowered:
        return "google"
    api_type = model_config(utils, model).get("api_type")
    return str(api_type) if api_type else None


def supported_kwargs(function: Callable[..., Any], **candidates: Any) -> dict[str, Any]:
    """The ``candidates`` that ``function`` names as parameters.

    Releases add optional parameters (post63: ``api_keys``,
    ``default_formatter_model`` …); they are passed only to the functions that
    have them. A catch-all ``**kwargs`` does not count: post30's ``CMBAgent``
    takes one and ignores what lands in it.
    """
    parameters = parameters_of(function)
    return {name: value for name, value in candidates.items() if name in parameters}


def parameters_of(function: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    """The parameters ``function`` takes, seen through the maintained line's
    public wrappers: its ``one_shot`` / ``deep_research`` are ``(*args,
    callbacks=None, **kwargs)`` around ``_one_shot_impl`` /
    ``_deep_research_impl`` in the same module, which name the real ones."""
    parameters = inspect.signature(function).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return parameters
    impl = getattr(inspect.getmodule(function), f"_{getattr(function, '__name__', '')}_impl", None)
    if not callable(impl):
        return parameters
    return {**inspect.signature(impl).parameters, **parameters}


def model_kwargs(function: Callable[..., Any], utils: Any) -> dict[str, str]:
    """``<agent>_model=…`` arguments for a workflow function.

    The functions bind their model defaults at definition time, so changing
    the library's tables is not enough: pass each model explicitly.
    """
    usable = set(configured_providers())
    overrides = model_overrides()
    chosen: dict[str, str] = {}
    for name, parameter in parameters_of(function).items():
        if not name.endswith("_model"):
            continue
        if name == "default_llm_model" and not _needs_replacing(utils, parameter.default, usable):
            continue  # the infrastructure agents' model, passed only when its provider has no key
        agent = name.removesuffix("_model")
        default = parameter.default if isinstance(parameter.default, str) else fallback_model()
        model = overrides.get(agent, default)
        if provider_of(utils, model) not in usable:
            model = fallback_model()
        chosen[name] = model
    return chosen


def _needs_replacing(utils: Any, default: Any, usable: set[str]) -> bool:
    return isinstance(default, str) and provider_of(utils, default) not in usable


def import_cmbagent() -> ModuleType:
    """Import cmbagent once, quietly, and adapt it to running as a service."""
    global _loaded
    if _loaded is not None:
        return _loaded
    # Inline notebook display makes no sense in a runner; print instead.
    os.environ.setdefault("CMBAGENT_DISABLE_DISPLAY", "True")
    module = importlib.import_module("cmbagent")
    utils = importlib.import_module("cmbagent.utils")
    _reassign_models(utils)
    core = importlib.import_module("cmbagent.cmbagent")
    _keep_chats_dir(core)
    adapters.step_reports(core)
    if transforms := _submodule("cmbagent.utils.message_transforms"):
        adapters.offline_tokenizer(transforms)
    for name in (
        "cmbagent.utils.arxiv_downloader",
        "cmbagent.utils.paper_downloader",
        "cmbagent.arxiv_downloader",
    ):
        if downloader := _submodule(name):
            adapters.arxiv_mirror(downloader, os.environ.get("CMBAGENT_ARXIV_URL", "").strip())
    for name in ("cmbagent.utils.ocr", "cmbagent.ocr"):
        if ocr := _submodule(name):
            adapters.mistral_server(ocr, os.environ.get("MISTRAL_BASE_URL", "").strip())
    _loaded = module
    return module


def _submodule(name: str) -> ModuleType | None:
    """``name`` imported, or None when this release has no such module."""
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        found = False
    return importlib.import_module(name) if found else None


def _reassign_models(utils: Any) -> None:
    """Point agents whose default provider has no key at a model that has one,
    then apply the deployment's per-agent choices."""
    configs: dict[str, dict[str, Any]] = utils.default_agent_llm_configs
    usable = set(configured_providers())
    for agent, config in list(configs.items()):
        if provider_of(utils, str(config.get("model", ""))) not in usable:
            configs[agent] = model_config(utils, fallback_model())
            log.info("cmbagent.model_reassigned", agent=agent, model=configs[agent]["model"])
    for agent, model in model_overrides().items():
        configs[agent] = model_config(utils, model)
        utils.default_agents_llm_model[agent] = model


def _keep_chats_dir(core: Any) -> None:
    """The AG2 fork writes every message to ``<work_dir>/chats/…json``, but
    0.0.1.post30 never creates ``chats/`` after clearing the work dir, so the
    first message of any workflow fails. Recreate it whenever the library
    clears a work dir. (0.0.1.post63 creates it in ``solve``; the wrapper is
    then a no-op.)"""
    cls = core.CMBAgent
    if getattr(cls.clear_work_dir, "_cmbtask_wrapped", False):
        return
    original = cls.clear_work_dir

    def clear_work_dir(self: Any) -> None:
        original(self)
        Path(self.work_dir, "chats").mkdir(parents=True, exist_ok=True)

    clear_work_dir._cmbtask_wrapped = True  # type: ignore[attr-defined]
    cls.clear_work_dir = clear_work_dir
