"""What differs between the supported cmbagent releases (0.0.1.post30 and
0.0.1.post63) and how the engine meets it, without the library: which modes
a release's exports allow, the function each mode runs, ``copilot`` once a
release has it, and the signature differences of the planning phase."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cmbtask_protocol import ApprovalStatus, Decision, TaskSpec
from cmbtask_runner.engines.base import ApprovalOutcome, EngineError
from cmbtask_runner.engines.cmbagent import CmbAgentEngine, library, workflows
from cmbtask_runner.engines.cmbagent.mapping import EventMapper
from cmbtask_runner.engines.cmbagent.modes import function_of, library_function, unavailable_reason
from cmbtask_runner.engines.cmbagent.params import CmbAgentParams

#: the workflow names each release's ``cmbagent/__init__.py`` binds (read off the wheels)
POST30 = frozenset(
    {"CMBAgent", "planning_and_control", "one_shot", "get_keywords", "human_in_the_loop", "control",
     "planning_and_control_context_carryover"}
)  # fmt: skip
POST63 = POST30 | {
    "deep_research", "summarize_document", "preprocess_task", "process_single_pdf", "arxiv_filter",
}  # fmt: skip
MARS = frozenset(
    {"CMBAgent", "one_shot", "deep_research", "planning_and_control_context_carryover",
     "planning_and_control", "compare_plans", "preprocess_task", "summarize_document",
     "process_single_pdf", "arxiv_filter", "WorkflowCallbacks", "get_provider_config"}
)  # fmt: skip
UTILITIES = {"arxiv", "enhance-input", "ocr"}
FOUR = ["control", "hitl-interactive", "one-shot", "planning-control"]


def _task(mode: str, **params: Any) -> TaskSpec:
    return TaskSpec(id="t1", session_id="s1", engine="cmbagent", mode=mode, prompt="T_cmb?", params=params)


@pytest.fixture
def release(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Pretend a release with the given exports and version is installed, with an OpenAI key."""
    for variable in library.KEY_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(library, "is_installed", lambda: True)

    def install(exported: frozenset[str], version: str) -> None:
        monkeypatch.setattr(library, "exported_names", lambda: exported)
        monkeypatch.setattr(library, "installed_version", lambda: version)

    return install


@pytest.mark.parametrize(
    ("exported", "version", "utilities"),
    [(POST30, "0.0.1.post30", []), (POST63, "0.0.1.post63", ["arxiv", "enhance-input", "ocr"])],
)
def test_both_releases_run_the_four_modes_but_not_copilot(
    release: Any, exported: frozenset[str], version: str, utilities: list[str]
) -> None:
    release(exported, version)
    described = CmbAgentEngine().describe()
    assert described.available and described.library_version == version
    assert described.modes == sorted([*FOUR, *utilities])
    assert described.resume_modes == ["planning-control"]
    # ocr, where the release has it, waits for the Mistral key only
    held = {"ocr": ["MISTRAL_API_KEY"]} if "ocr" in utilities else {}
    assert described.needs_keys == held
    assert set(described.unavailable_modes) == {"copilot", *UTILITIES} - set(utilities) | set(held)
    assert described.unavailable_modes["copilot"] == (
        f"copilot is not part of the installed cmbagent {version} (it needs cmbagent.copilot)"
    )
    if not utilities:
        assert described.unavailable_modes["arxiv"] == (
            f"arxiv is not part of the installed cmbagent {version} (it needs cmbagent.arxiv_filter)"
        )
    with pytest.raises(EngineError, match=f"installed cmbagent {version}"):
        CmbAgentEngine().validate(_task("copilot"))


def test_copilot_is_available_once_a_release_exports_it(release: Any) -> None:
    release(POST63 | {"copilot"}, "0.0.1.post99")
    described = CmbAgentEngine().describe()
    assert described.modes == sorted([*FOUR, "copilot", *UTILITIES])
    assert "copilot" not in described.unavailable_modes
    CmbAgentEngine().validate(_task("copilot", agent="researcher"))


def test_a_release_without_a_function_loses_only_that_mode(release: Any) -> None:
    release(frozenset({"one_shot", "control", "deep_research"}), "0.0.2")
    described = CmbAgentEngine().describe()
    # deep_research stands in for planning_and_control_context_carryover
    assert described.modes == ["control", "one-shot", "planning-control"]
    assert described.unavailable_modes["hitl-interactive"] == (
        "hitl-interactive is not part of the installed cmbagent 0.0.2 (it needs cmbagent.human_in_the_loop)"
    )
    with pytest.raises(EngineError, match=r"needs cmbagent\.human_in_the_loop"):
        CmbAgentEngine().validate(_task("hitl-interactive"))


def test_the_first_exported_name_wins() -> None:
    both = {"planning_and_control_context_carryover", "deep_research"}
    assert library_function("planning-control", both) == "planning_and_control_context_carryover"
    assert library_function("planning-control", {"deep_research"}) == "deep_research"
    assert library_function("planning-control", set()) is None
    # unknown exports (library not readable): what every supported release has
    assert library_function("planning-control", None) == "planning_and_control_context_carryover"
    assert library_function("copilot", None) is None
    assert unavailable_reason("copilot", None, None) == (
        "copilot is not part of cmbagent 0.0.1.post30 or 0.0.1.post63 (it needs cmbagent.copilot)"
    )


def test_function_of_reads_the_imported_module() -> None:
    def deep_research(task: str) -> None:
        """post63's alias, alone."""

    lib = SimpleNamespace(deep_research=deep_research, copilot="not a function")
    assert function_of(lib, "planning-control", "x") is deep_research
    with pytest.raises(EngineError, match=r"copilot is not part of the installed cmbagent x"):
        function_of(lib, "copilot", "x")


def test_exported_names_reads_the_package_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "cmbagent"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise RuntimeError('importing the package is what exported_names must not do')\n"
        "import os\n"
        "from .cmbagent import CMBAgent, one_shot, control\n"
        "from .cmbagent import planning_and_control_context_carryover as deep_research\n"
        "try:\n"
        "    from .assist import copilot\n"
        "except ImportError:\n"
        "    pass\n"
        "if os.environ.get('X'):\n"
        "    human_in_the_loop = None\n"
        "def print_logo():\n"
        "    from .hidden import not_exported\n",
        encoding="utf-8",
    )
    monkeypatch.delitem(sys.modules, "cmbagent", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))

    exported = library.exported_names()

    assert exported is not None
    assert {"CMBAgent", "one_shot", "control", "deep_research", "copilot", "human_in_the_loop"} <= exported
    assert "planning_and_control_context_carryover" not in exported  # only its alias is bound
    assert "not_exported" not in exported
    assert "cmbagent" not in sys.modules


def test_model_config_of_either_release(monkeypatch: pytest.MonkeyPatch) -> None:
    post30 = SimpleNamespace(get_model_config=lambda model: {"model": model, "api_type": "openai"})
    assert library.model_config(post30, "gpt-4.1") == {"model": "gpt-4.1", "api_type": "openai"}

    def get_model_config(model: str, api_keys: dict[str, str | None]) -> dict[str, Any]:
        return {"model": model, "api_type": "openai", "api_key": api_keys["OPENAI"]}

    post63 = SimpleNamespace(get_model_config=get_model_config, get_api_keys_from_env=lambda: {"OPENAI": "k"})
    expected = {"model": "o3-mini", "api_type": "openai", "api_key": "k"}
    assert library.model_config(post63, "o3-mini") == expected


def test_supported_kwargs_passes_only_named_parameters() -> None:
    def post30_init(work_dir: str, agent_llm_configs: dict[str, Any], **kwargs: Any) -> None:
        """A catch-all that would swallow what the release does not know."""

    def post63_init(work_dir: str, api_keys: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """post63 names api_keys."""

    assert library.supported_kwargs(post30_init, api_keys={}, work_dir="w") == {"work_dir": "w"}
    assert library.supported_kwargs(post63_init, api_keys={}, other=1) == {"api_keys": {}}


# ---- the planning phase on each release's CMBAgent signature -------------------------


class _Ctx:
    def __init__(self, work_dir: Path) -> None:
        self.task = _task("planning-control")
        self.work_dir = work_dir
        self.cancelled = threading.Event()
        self.state: dict[str, Any] | None = None
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        self.events.append((event_type, data))

    def request_approval(self, prompt: str, **kwargs: Any) -> ApprovalOutcome:
        return ApprovalOutcome(ApprovalStatus.APPROVED, Decision.APPROVE, None, "alice")

    def load_state(self) -> dict[str, Any] | None:
        return self.state

    def save_state(self, state: dict[str, Any], checkpoint: str = "") -> int:
        self.state = state
        return 1


PLAN = [{"sub_task": "summarise", "sub_task_agent": "researcher", "bullet_points": ["notes"]}]


def _library(post63: bool) -> tuple[SimpleNamespace, list[dict[str, Any]]]:
    """A stand-in cmbagent with the planning-relevant signatures of one release."""
    created: list[dict[str, Any]] = []
    keys = {"OPENAI": "sk-test", "ANTHROPIC": None}

    class Agent:
        def _record(self, work_dir: Path, configs: dict[str, Any], **rest: Any) -> None:
            created.append({"work_dir": work_dir, "configs": configs, **rest})
            self.final_context: dict[str, Any] = {}

        def solve(self, task: str, **kwargs: Any) -> None:
            self.final_context = {"final_plan": PLAN, "shared_context": kwargs["shared_context"]}

        def display_cost(self) -> None:
            """Writes a cost report in the real library."""

    class Post30Agent(Agent):
        def __init__(self, work_dir: Path, agent_llm_configs: dict[str, Any], **kwargs: Any) -> None:
            self._record(work_dir, agent_llm_configs, kwargs=kwargs)

    class Post63Agent(Agent):
        def __init__(
            self,
            work_dir: Path,
            agent_llm_configs: dict[str, Any],
            default_formatter_model: str = "o3-mini-2025-01-31",
            api_keys: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            formatter = default_formatter_model
            self._record(work_dir, agent_llm_configs, formatter=formatter, api_keys=api_keys, kwargs=kwargs)

    def save_final_plan(final_context: dict[str, Any], work_dir: Path) -> Path:
        path = Path(work_dir) / "final_plan.json"
        path.write_text(json.dumps({"sub_tasks": final_context["final_plan"]}), encoding="utf-8")
        return path

    controlled: list[Path] = []

    def control(task: str, plan: str = "", work_dir: Path | None = None, **kwargs: Any) -> None:
        assert work_dir is not None
        controlled.append(work_dir)

    if post63:

        def get_model_config(model: str, api_keys: dict[str, Any]) -> dict[str, Any]:
            return {"model": model, "api_type": "openai", "api_key": api_keys["OPENAI"]}

        def carryover(
            task: str,
            planner_model: str = "gpt-4.1",
            plan_reviewer_model: str = "o3-mini-2025-01-31",
            default_formatter_model: str = "o3-mini-2025-01-31",
        ) -> None:
            """Only its signature is read."""

        utils = SimpleNamespace(get_model_config=get_model_config, get_api_keys_from_env=lambda: keys)
        agent_class: type[Agent] = Post63Agent
    else:

        def carryover(
            task: str, planner_model: str = "gpt-4.1", plan_reviewer_model: str = "gpt-4.1"
        ) -> None:
            """Only its signature is read."""

        utils = SimpleNamespace(get_model_config=lambda model: {"model": model, "api_type": "openai"})
        agent_class = Post30Agent
    core = SimpleNamespace(CMBAgent=agent_class, save_final_plan=save_final_plan)
    lib = SimpleNamespace(
        cmbagent=core, utils=utils, control=control, planning_and_control_context_carryover=carryover
    )
    return lib, created


@pytest.mark.parametrize("post63", [False, True], ids=["post30", "post63"])
def test_planning_phase_gives_cmbagent_what_each_release_takes(
    post63: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("CMBAGENT_MODELS", raising=False)
    lib, created = _library(post63)
    ctx = _Ctx(tmp_path)
    mapper = EventMapper()
    run = workflows.Run(
        ctx=ctx,  # type: ignore[arg-type]
        params=CmbAgentParams(n_plan_reviews=0),
        lib=lib,  # type: ignore[arg-type]
        root=tmp_path,
        mapper=mapper,
        function=lib.planning_and_control_context_carryover,
    )
    with pytest.raises(EngineError, match="stopped after step 0 of 1"):
        workflows.planning_control(run)  # the stand-in control completes no step

    assert len(created) == 1
    made = created[0]
    assert made["work_dir"] == tmp_path / "planning" and made["work_dir"].is_dir()
    assert made["kwargs"] == {}  # nothing a release does not name lands in its **kwargs
    if post63:
        assert made["api_keys"] == {"OPENAI": "sk-test", "ANTHROPIC": None}
        assert made["formatter"] == "o3-mini-2025-01-31"
        assert made["configs"]["plan_reviewer"] == {
            "model": "o3-mini-2025-01-31",
            "api_type": "openai",
            "api_key": "sk-test",
        }
    else:
        assert made["configs"]["planner"] == {"model": "gpt-4.1", "api_type": "openai"}
    assert [kind for kind, _ in ctx.events] == ["plan.proposed"]
    assert ctx.state is not None and ctx.state["plan"] == PLAN


def test_copilot_workflow_passes_what_the_release_function_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("CMBAGENT_MODELS", raising=False)
    calls: list[dict[str, Any]] = []

    def copilot(
        task: str,
        work_dir: Path,
        max_rounds: int = 10,
        agent: str = "engineer",
        engineer_model: str = "gpt-4.1",
    ) -> None:
        calls.append(
            {
                "task": task,
                "work_dir": work_dir,
                "max_rounds": max_rounds,
                "agent": agent,
                "engineer_model": engineer_model,
            }
        )

    lib = SimpleNamespace(
        copilot=copilot, utils=SimpleNamespace(get_model_config=lambda m: {"model": m, "api_type": "openai"})
    )
    ctx = _Ctx(tmp_path)
    params = CmbAgentParams(agent="researcher", max_rounds=7, max_n_attempts=2)
    function = function_of(lib, "copilot", "0.0.1.post99")
    run = workflows.Run(
        ctx=ctx,  # type: ignore[arg-type]
        params=params,
        lib=lib,  # type: ignore[arg-type]
        root=tmp_path,
        mapper=EventMapper(),
        function=function,
    )
    assert workflows.copilot(run) == {}
    # max_n_attempts and the instructions are not parameters of this copilot, so not passed
    expected = {"task": "T_cmb?", "work_dir": tmp_path, "max_rounds": 7, "agent": "researcher"}
    assert calls == [{**expected, "engineer_model": "gpt-4.1"}]


def test_the_maintained_line_runs_its_functions_and_says_what_it_lacks(
    release: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    release(MARS, "2.2.5")
    monkeypatch.setattr(library, "installed_release", lambda: "mars-cmbagent 2.2.5")
    described = CmbAgentEngine().describe()
    # ocr is there but needs the Mistral key; without it only that mode waits
    assert described.available
    assert described.modes == ["arxiv", "enhance-input", "ocr", "one-shot", "planning-control"]
    assert described.needs_keys == {"ocr": ["MISTRAL_API_KEY"]}
    assert described.unavailable_modes["ocr"] == "needs MISTRAL_API_KEY (not set for the runner)"
    assert described.unavailable_modes["control"] == (
        "control is not part of the installed mars-cmbagent 2.2.5 (it needs cmbagent.control)"
    )
    with pytest.raises(EngineError, match="needs MISTRAL_API_KEY"):
        CmbAgentEngine().validate(_task("ocr"))
    monkeypatch.setenv("MISTRAL_API_KEY", "m-test")
    assert CmbAgentEngine().describe().needs_keys == {}
    CmbAgentEngine().validate(_task("ocr"))


def test_without_any_key_only_the_keyless_mode_runs(release: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    release(MARS, "2.2.5")
    monkeypatch.delenv("OPENAI_API_KEY")
    described = CmbAgentEngine().describe()
    assert described.available  # arXiv asks no LLM
    assert set(described.needs_keys) == {"enhance-input", "ocr", "one-shot", "planning-control"}
    every_key = list(library.KEY_VARIABLES.values())
    assert described.needs_keys["one-shot"] == every_key
    assert described.unavailable_modes["one-shot"].startswith("no LLM API key is configured for the runner")
    assert "copilot" not in described.needs_keys  # no key would make the release have it
    with pytest.raises(EngineError, match="no LLM API key"):
        CmbAgentEngine().validate(_task("one-shot"))
    CmbAgentEngine().validate(_task("arxiv"))
