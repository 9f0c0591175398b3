"""The committed CRD manifest is exactly what protocol generates."""

from __future__ import annotations

from pathlib import Path

import yaml
from cmbtask_protocol import CRD_GROUP, CmbTaskSpec, CmbTaskStatus
from cmbtask_protocol.crdgen import render

MANIFEST = Path(__file__).resolve().parents[2] / "charts/cmbtask/files/cmbtasks.crd.yaml"


def test_committed_crd_matches_the_protocol_models() -> None:
    assert MANIFEST.read_text(encoding="utf-8") == render(), (
        "charts/cmbtask/files/cmbtasks.crd.yaml drifted: run "
        "`python -m cmbtask_protocol.crdgen charts/cmbtask/files/cmbtasks.crd.yaml`"
    )


def _walk(schema: dict, path: str = "") -> list[str]:
    """Paths that break the structural-schema rules the API server enforces."""
    bad = []
    if "$ref" in schema or "anyOf" in schema or "const" in schema or "title" in schema:
        bad.append(path)
    if "type" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        bad.append(path)
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in schema and not isinstance(schema[key], bool):
            bad.append(f"{path}.{key}")
    for name, sub in (schema.get("properties") or {}).items():
        bad += _walk(sub, f"{path}.{name}")
    if "items" in schema:
        bad += _walk(schema["items"], f"{path}[]")
    return bad


def test_schema_is_structural_and_covers_every_field() -> None:
    crd = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert crd["metadata"]["name"] == f"cmbtasks.{CRD_GROUP}"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == ["ct"]
    [version] = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    root = version["schema"]["openAPIV3Schema"]
    assert _walk(root) == []
    spec = root["properties"]["spec"]["properties"]
    status = root["properties"]["status"]["properties"]
    assert set(spec) == {f.alias for f in CmbTaskSpec.model_fields.values()}
    assert set(status) == {f.alias for f in CmbTaskStatus.model_fields.values()}
    assert spec["engine"]["pattern"] == "^[a-z][a-z0-9_-]*$"
    assert spec["params"]["x-kubernetes-preserve-unknown-fields"] is True
    assert root["properties"]["spec"]["required"] == ["engine"]


def test_printer_columns() -> None:
    crd = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    columns = {c["name"]: c["jsonPath"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Session"] == ".spec.sessionId"
    assert columns["Mode"] == ".spec.mode"
    assert columns["Pod"] == ".status.podName"
    assert columns["Approval"] == ".status.approval.summary"
    assert columns["Age"] == ".metadata.creationTimestamp"
