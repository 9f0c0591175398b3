"""A user's provider key on Kubernetes: in the task's own Secret, referenced by
the pod's environment, never in the CmbTask, and gone with the CmbTask.

Checked through the API server only (objects, the task's events): nothing here
depends on how the node runs the pod. (That the runner process then has the key
in its environment is the kubelet's part; tests/gateway/test_accounts.py proves
the runner side with a local runner.)
"""

from __future__ import annotations

import base64
import json

import pytest
from cmbtask_protocol import cmbtask_name_for_task

from tests.e2e.cluster import Kubectl, wait_for
from tests.e2e.conftest import GATEWAY_NAMESPACE
from tests.e2e.test_gateway import new_session, runner_pods, submit, task_phase
from tests.support.gateway import GatewayProcess

pytestmark = [pytest.mark.k8s, pytest.mark.usefixtures("operator")]

PLANTED = "sk-planted-k8s-9b3f0c6e1d2a7788"
QUICK_DEMO = {"steps": 1, "step_delay_s": 0.1, "lines_per_step": 1}


def test_a_users_key_travels_in_the_tasks_secret_only(gateway: GatewayProcess, kubectl: Kubectl) -> None:
    with gateway.client() as http:
        assert http.put("/api/keys/openai", json={"value": PLANTED}).status_code == 200
        try:
            session_id = new_session(http)
            task = submit(http, session_id, engine="demo", mode="one-shot", params=QUICK_DEMO)
            done = task_phase(http, task["id"], {"succeeded", "failed", "cancelled", "timed_out"}, 120)
            events = http.get(f"/api/sessions/{session_id}/events", params={"after": 0}).json()["items"]
        finally:
            http.delete("/api/keys/openai")
    assert done["phase"] == "succeeded", done["reason"]
    assert PLANTED not in json.dumps(events) + json.dumps(done)

    name = cmbtask_name_for_task(task["id"])
    found = kubectl.get("cmbtask", name, GATEWAY_NAMESPACE)
    assert found is not None and PLANTED not in json.dumps(found)
    secret = kubectl.get("secret", f"{name}-token", GATEWAY_NAMESPACE)
    assert secret is not None
    assert base64.b64decode(secret["data"]["OPENAI_API_KEY"]).decode() == PLANTED
    assert "GEMINI_API_KEY" not in secret["data"]  # only what the user stored (the pod's ref is optional)
    assert [ref["uid"] for ref in secret["metadata"]["ownerReferences"]] == [found["metadata"]["uid"]]
    for pod in runner_pods(kubectl, name):
        assert PLANTED not in json.dumps(pod)
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == f"{name}-token"
    assert PLANTED not in gateway.log_path.read_text()

    kubectl.run("delete", "cmbtask", name, "-n", GATEWAY_NAMESPACE)
    wait_for(
        lambda: kubectl.get("secret", f"{name}-token", GATEWAY_NAMESPACE) is None or None,
        90,
        "the task's Secret to go with its CmbTask",
    )
