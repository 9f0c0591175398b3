"""The REST API under a schema fuzzer: schemathesis against a real ``cmbtask up``.

Every check schemathesis has (``--checks all``) and every phase, stateful
included, with no operation left out, in ``none`` and in ``token`` auth mode:
no server error, no status or content type the document does not list, no
schema-valid request refused, no schema-invalid one accepted, no response
that breaks its own schema, and ``Allow`` on every 405.

The number of cases is bounded (``--max-examples``) and the seed fixed, so a
run takes about a minute on two cores and a failure replays. Strings keep
schemathesis's default alphabet, without U+0000: the gateway refuses NUL
everywhere (no database stores it; test_input_limits.py), which the document
does not spell out for free-form objects such as ``params``, so
``--generation-allow-x00 true`` reports that refusal as a valid request
rejected. The same
command works against any deployment (README, "Tests").
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import GatewayProcess

#: cases per operation and phase: ~1,100 cases, 25-90 s here, several minutes
#: when the machine is busy, hence the timeout above the suite's 300 s
MAX_EXAMPLES = 20
SEED = 13
pytestmark = pytest.mark.timeout(900)


def schemathesis_command(url: str, report: Path, token: str | None) -> list[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    if token:
        command += ["--header", f"Authorization: Bearer {token}"]
    return command


def _failures(report: dict[str, Any]) -> list[str]:
    lines = []
    for failure in report.get("failures", []):
        lines.append(json.dumps(failure)[:600])
    return lines


@pytest.mark.parametrize("auth_mode", ["none", "token"])
def test_schemathesis_finds_nothing(
    auth_mode: str,
    gateway_factory: Callable[..., GatewayProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = gateway_factory(CMBTASK_AUTH_MODE=auth_mode)
    token = gateway.create_token("fuzzer") if auth_mode == "token" else None
    # The document offers what the runners said they can run; /api/modes waits
    # for their first answer, so the fuzzer reads the document of a settled gateway.
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    httpx.get(f"{gateway.url}/api/modes", headers=headers, timeout=60).raise_for_status()
    report_path = tmp_path / "schemathesis.json"
    # Its own working directory: schemathesis and hypothesis keep a cache there.
    run = subprocess.run(
        schemathesis_command(gateway.url, report_path, token),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert report_path.exists(), run.stdout[-4000:] + run.stderr[-4000:]
    report = json.loads(report_path.read_text())
    cases = report["test_cases"]
    with capsys.disabled():  # the totals belong in every run's output, passing or not
        print(
            f"\nschemathesis {report['schemathesis_version']} ({auth_mode} auth): "
            f"{cases['generated']} cases generated, {cases['unique_failures']} unique failures, "
            f"{cases['errored']} errored, in {report['running_time']:.0f} s"
        )
    assert report["complete"] and report["stop_reason"] == "completed", run.stdout[-4000:]
    # The document has no examples, so that phase has nothing to send; the others must all run.
    phases = report["phases"]
    assert {name: phases[name]["status"] for name in ("coverage", "fuzzing", "stateful")} == dict.fromkeys(
        ("coverage", "fuzzing", "stateful"), "success"
    ), phases
    assert cases["generated"] >= 300, cases  # the run really exercised the API
    assert cases["unique_failures"] == 0 and not report["failures"], "\n".join(_failures(report))
    assert cases["errored"] == 0 and not report["errors"], report["errors"]
    assert run.returncode == 0, run.stdout[-4000:]
    with gateway.client(token) as client:
        # The fuzzer's work was stored, so the stateful phase reached the database.
        assert client.get("/api/sessions").json()["total"] > 0
