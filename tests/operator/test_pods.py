"""The runner pod builder: one typed input, a pod the API server accepts."""

from __future__ import annotations

import re

import pytest
from cmbtask_operator import OperatorSettings, PodInput, build_pod, pod_name
from cmbtask_operator.pods import ANNOTATION_TASK_ID, quantity
from cmbtask_protocol import (
    ENV_TRACEPARENT,
    LABEL_MANAGED_BY,
    LABEL_TASK,
    PROVIDER_KEY_VARIABLES,
    CmbTaskSpec,
    cmbtask_name_for_task,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SETTINGS = OperatorSettings(
    gateway_url="http://gw.example:8080",
    image="runner:1",
    cpu_request="100m",
    cpu_limit="1",
    memory_request="128Mi",
    memory_limit="1Gi",
    deadline_grace_s=30,
    standalone=True,
    priority=1,
)


def make(spec: dict[str, object] | None = None, name: str = "task-abc", uid: str = "uid-1") -> dict:
    task = CmbTaskSpec.model_validate({"engine": "demo", **(spec or {})})
    return build_pod(PodInput(name=name, namespace="ns1", uid=uid, spec=task, settings=SETTINGS))


def env_of(pod: dict) -> dict[str, dict]:
    return {item["name"]: item for item in pod["spec"]["containers"][0]["env"]}


def test_owner_reference_points_at_the_cmbtask_as_controller() -> None:
    pod = make()
    [ref] = pod["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "cmbtask.io/v1alpha1",
        "kind": "CmbTask",
        "name": "task-abc",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_name_and_labels_are_deterministic() -> None:
    first, second = make(), make()
    assert first["metadata"]["name"] == second["metadata"]["name"] == "task-abc-runner"
    assert first["metadata"]["labels"][LABEL_MANAGED_BY] == "cmbtask-operator"
    assert first["metadata"]["labels"][LABEL_TASK] == "task-abc"
    assert first["metadata"]["namespace"] == "ns1"


def test_long_task_ids_give_valid_distinct_names() -> None:
    base = "A" * 40 + "_Über.task/" + "x" * 200
    ids = [base + "1", base + "2", base.lower() + "1"]
    names = [cmbtask_name_for_task(task_id) for task_id in ids]
    pods = [pod_name(name) for name in names]
    for name in [*names, *pods]:
        assert DNS_LABEL.match(name), name
        assert len(name) <= 63
    assert len(set(names)) == len(ids)
    assert len(set(pods)) == len(ids)
    long_cmbtask = "a" * 63
    assert pod_name(long_cmbtask) != pod_name("a" * 62)
    assert len(pod_name(long_cmbtask)) <= 63


def test_env_carries_task_gateway_token_secret_and_work_dir() -> None:
    env = env_of(make({"taskId": "t-42"}))
    assert env["CMBTASK_TASK_ID"]["value"] == "t-42"
    assert env["CMBTASK_GATEWAY_URL"]["value"] == "http://gw.example:8080"
    assert env["CMBTASK_TASK_TOKEN"] == {
        "name": "CMBTASK_TASK_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "task-abc-token", "key": "token"}},
    }
    assert "value" not in env["CMBTASK_TASK_TOKEN"]
    assert env["CMBTASK_WORK_DIR"]["value"] == "/work"


def test_provider_keys_come_from_the_per_task_secret_only() -> None:
    pod = make({"tokenSecretName": "mine"})
    env = env_of(pod)
    for variable in PROVIDER_KEY_VARIABLES.values():
        assert env[variable] == {
            "name": variable,
            "valueFrom": {"secretKeyRef": {"name": "mine", "key": variable, "optional": True}},
        }
    # no key is ever written into the pod itself
    assert all("value" not in env[v] for v in PROVIDER_KEY_VARIABLES.values())
    assert "envFrom" not in pod["spec"]["containers"][0]


def test_uid_is_the_task_id_of_a_kubectl_made_cmbtask() -> None:
    pod = make(uid="5f0c-uid")
    assert env_of(pod)["CMBTASK_TASK_ID"]["value"] == "5f0c-uid"
    assert pod["metadata"]["annotations"][ANNOTATION_TASK_ID] == "5f0c-uid"


def test_spec_overrides_gateway_url_secret_and_image() -> None:
    pod = make({"gatewayUrl": "http://other:1", "tokenSecretName": "mine", "image": "custom:2"})
    env = env_of(pod)
    assert env["CMBTASK_GATEWAY_URL"]["value"] == "http://other:1"
    assert env["CMBTASK_TASK_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "mine"
    assert pod["spec"]["containers"][0]["image"] == "custom:2"


def test_resources_default_from_settings_and_merge_with_spec() -> None:
    assert make()["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    resources = make({"resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}})["spec"][
        "containers"
    ][0]["resources"]
    # a limit below the default request pulls the request down with it
    assert resources == {
        "requests": {"cpu": "250m", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "64Mi"},
    }


@pytest.mark.parametrize(("text", "value"), [("500m", 0.5), ("1Gi", 2**30), ("2", 2.0), ("1.5M", 1.5e6)])
def test_quantity(text: str, value: float) -> None:
    assert quantity(text) == pytest.approx(value)


def test_security_no_token_never_restart_and_work_volume() -> None:
    pod = make()
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] >= 1
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["command"] == ["python", "-m", "cmbtask_runner"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["work"] == "/work"
    assert "emptyDir" in volumes["work"]


def test_deadline_follows_timeout_plus_grace() -> None:
    assert "activeDeadlineSeconds" not in make()["spec"]
    assert make({"timeoutSeconds": 90})["spec"]["activeDeadlineSeconds"] == 120


def test_scheduling_and_pull_secrets_from_settings() -> None:
    assert not {"nodeSelector", "tolerations", "imagePullSecrets"} & set(make()["spec"])
    settings = SETTINGS.model_copy(
        update={
            "node_selector": {"pool": "runners"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "runners", "effect": "NoSchedule"}
            ],
            "image_pull_secrets": ["regcred", {"name": "other"}],
        }
    )
    task = CmbTaskSpec(engine="demo")
    spec = build_pod(PodInput(name="t", namespace="n", uid="u", spec=task, settings=settings))["spec"]
    assert spec["nodeSelector"] == {"pool": "runners"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]


def test_settings_read_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMBTASK_OPERATOR_NODE_SELECTOR", '{"pool": "runners"}')
    monkeypatch.setenv("CMBTASK_OPERATOR_TOLERATIONS", "[]")
    monkeypatch.setenv("CMBTASK_OPERATOR_IMAGE_PULL_SECRETS", '[{"name": "regcred"}]')
    monkeypatch.setenv("CMBTASK_OPERATOR_NAMESPACES", '["a", "b"]')
    settings = OperatorSettings()
    assert settings.node_selector == {"pool": "runners"}
    assert settings.image_pull_secrets == [{"name": "regcred"}]
    assert settings.namespaces == ["a", "b"]


def test_the_launch_context_and_the_admins_tracing_env_reach_the_runner() -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    settings = SETTINGS.model_copy(update={"runner_env": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"}})
    task = CmbTaskSpec.model_validate({"engine": "demo"})
    source = PodInput(
        name="t", namespace="ns1", uid="u", spec=task, settings=settings, traceparent=traceparent
    )
    env = env_of(build_pod(source))
    assert env[ENV_TRACEPARENT] == {"name": ENV_TRACEPARENT, "value": traceparent}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel:4318"
    assert ENV_TRACEPARENT not in env_of(make()), "an untraced launch gets no context"


@pytest.mark.parametrize("name", ["CMBTASK_TASK_TOKEN", ENV_TRACEPARENT, "OPENAI_API_KEY"])
def test_runner_env_cannot_set_the_runner_contract_or_a_key(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        OperatorSettings(runner_env={name: "x"}, standalone=True, priority=1)
