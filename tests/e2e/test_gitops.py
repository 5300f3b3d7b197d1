"""GitOps: the Argo CD health check and Flux's kstatus view of real objects.

docs/argocd-health.lua runs in a real Lua interpreter (Debian's lua5.4 with lua-cjson,
installed by hack/testenv.sh) on ImageOperations read from the bed's API server in each
phase: succeeded, failed, never picked up (no agent serves the node) and changed after
success. Flux's kstatus reads the same conditions; ``kubectl wait --for=condition=...``
is checked on the same objects. That re-applying an unchanged spec re-runs nothing is
tests/e2e/test_imageoperation.py::test_reapply_unchanged_does_not_rerun_and_new_generation_does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client

from imageops.models.base import GROUP, VERSION
from tests.e2e.conftest import missing
from tests.e2e.fixtures import MAIN_NODE
from tests.e2e.harness import OperatorProcess, Ops, running_operator
from tests.testbed import Testbed

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
HEALTH = REPO / "docs/argocd-health.lua"
Obj = dict[str, Any]
# Feeds one object to the health check the way Argo CD does: the object as the global
# `obj` (JSON null as nil), the script's returned table as the result.
DRIVER = """
local cjson = require("cjson")
local function strip(value)
  if value == cjson.null then return nil end
  if type(value) == "table" then
    for key, item in pairs(value) do value[key] = strip(item) end
  end
  return value
end
obj = strip(cjson.decode(io.read("*a")))
local hs = dofile(arg[1])
io.write(cjson.encode({status = hs.status, message = hs.message}))
"""


@pytest.fixture(scope="module")
def lua(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The command running the driver with the health check."""
    binary = shutil.which("lua5.4")
    if binary is None:
        missing("lua5.4 is missing: hack/testenv.sh installs lua5.4 and lua-cjson")
    probe = subprocess.run([binary, "-e", "require('cjson')"], capture_output=True, check=False)
    if probe.returncode != 0:
        missing("lua-cjson is missing: hack/testenv.sh installs it")
    driver = tmp_path_factory.mktemp("lua") / "driver.lua"
    driver.write_text(DRIVER)
    return [binary, str(driver), str(HEALTH)]


def health(lua: list[str], obj: Obj) -> Obj:
    """What Argo CD would show for ``obj``."""
    out = subprocess.run(lua, input=json.dumps(obj), capture_output=True, text=True, check=False,
                         timeout=10)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def kstatus(obj: Obj) -> str:
    """The same rule written independently (Python), as kstatus reads conditions."""
    generation = obj["metadata"].get("generation")
    status = obj.get("status") or {}

    def current(ctype: str) -> bool:
        for cond in status.get("conditions") or []:
            if cond["type"] == ctype and cond["status"] == "True":
                observed = cond.get("observedGeneration", status.get("observedGeneration"))
                return bool(observed == generation)
        return False

    if current("Stalled"):
        return "Degraded"
    return "Healthy" if current("Ready") else "Progressing"


def kubectl_wait(ops: Ops, name: str, condition: str, timeout: str = "5s") -> bool:
    """``kubectl wait --for=condition=...``: True when met within the timeout."""
    out = subprocess.run(["kubectl", "wait", "-n", ops.namespace, f"--for=condition={condition}",
                          f"imgop/{name}", f"--timeout={timeout}"], capture_output=True,
                         text=True, check=False, timeout=60)
    return out.returncode == 0


def test_health_of_succeeded_failed_and_unserved_operations(
    operator: OperatorProcess, ops: Ops, testbed: Testbed, lua: list[str]
) -> None:
    source = testbed.make_image(testbed.unique())
    ops.create("ok", {"action": "Tag", "image": source, "target": testbed.unique(),
                      "nodeName": MAIN_NODE})
    ops.create("missing", {"action": "Pull", "image": testbed.unique(), "nodeName": MAIN_NODE})
    # As the API server stored it (the create response): no agent serves that node, so
    # nothing but the controller's NodeUnavailable verdict (after a grace period) follows.
    unserved = ops.create("unserved", {"action": "Tag", "image": source,
                                       "target": testbed.unique(),
                                       "nodeName": f"no-agent-{uuid.uuid4().hex[:8]}"})
    assert "status" not in unserved
    assert health(lua, unserved)["status"] == "Progressing" == kstatus(unserved)

    assert ops.wait_phase("ok")["phase"] == "Succeeded"
    ok = ops.get("ok")
    assert ok is not None
    assert health(lua, ok)["status"] == "Healthy" == kstatus(ok)
    assert kubectl_wait(ops, "ok", "Ready") and not kubectl_wait(ops, "ok", "Stalled", "1s")

    status = ops.wait_phase("missing")
    assert status["phase"] == "Failed" and status["lastError"]["reason"] == "NotFound"
    failed = ops.get("missing")
    assert failed is not None
    verdict = health(lua, failed)
    assert verdict["status"] == "Degraded" == kstatus(failed)
    assert verdict["message"], verdict
    assert kubectl_wait(ops, "missing", "Stalled")
    assert not kubectl_wait(ops, "missing", "Ready", "1s")

    later = ops.get("unserved")
    assert later is not None and not kubectl_wait(ops, "unserved", "Ready", "1s")
    assert health(lua, later)["status"] == kstatus(later)
    if later.get("status"):  # the controller has been up longer than the grace period
        assert later["status"]["lastError"]["reason"] == "NodeUnavailable"
        assert health(lua, later)["status"] == "Degraded"


def test_changed_spec_is_progressing_until_the_new_generation_is_done(
    ops: Ops, testbed: Testbed, lua: list[str], log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ready status of generation 1 says nothing about generation 2."""
    node = f"gitops-{uuid.uuid4().hex[:8]}"
    source = testbed.make_image(testbed.unique())
    spec = {"action": "Tag", "image": source, "target": testbed.unique(), "nodeName": node}
    # Its heartbeat Lease goes into the test's namespace, not "default".
    monkeypatch.setenv("POD_NAMESPACE", ops.namespace)
    with running_operator(node, "--role", "agent", log_dir=log_dir):
        ops.create("changed", spec)
        assert ops.wait_phase("changed")["phase"] == "Succeeded"
    # The agent is gone: nobody acts on the new generation while we look.
    ops.patch_spec("changed", {"timeoutSeconds": 120})
    obj = ops.get("changed")
    assert obj is not None and obj["metadata"]["generation"] == 2
    assert obj["status"]["observedGeneration"] == 1 and obj["status"]["phase"] == "Succeeded"
    verdict = health(lua, obj)
    assert verdict["status"] == "Progressing" == kstatus(obj)
    assert "Generation 2" in verdict["message"]
    assert not kubectl_wait(ops, "changed", "Ready", "2s")


def test_sessions_and_workflows_follow_the_same_rule(
    operator: OperatorProcess, kube: client.ApiClient, namespace: str, lua: list[str]
) -> None:
    """Whatever phase the controller has them in, the script agrees with kstatus."""
    custom = client.CustomObjectsApi(kube)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageSession",
            "metadata": {"name": "gitops"}, "spec": {}}
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "imagesessions", body)
    fresh = cast(Obj, custom.get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                          "imagesessions", "gitops"))
    assert health(lua, fresh)["status"] == kstatus(fresh)
    stale = json.loads(json.dumps(fresh))
    stale["metadata"]["generation"] = fresh["metadata"]["generation"] + 1
    assert health(lua, stale)["status"] == kstatus(stale) != "Healthy"


def test_gitops_examples_point_at_the_chart_and_the_health_check() -> None:
    argo = list(yaml.safe_load_all((REPO / "examples/gitops/argocd-application.yaml").read_text()))
    kinds = [d["kind"] for d in argo if d]
    assert kinds.count("Application") == 2, kinds
    chart_app = next(d for d in argo if d and d["spec"]["source"].get("path") == "charts/imageops")
    assert chart_app["spec"]["source"]["helm"]["valuesObject"]["crds"]["keep"] is True
    health_cm = next(d for d in argo if d and d["kind"] == "ConfigMap")
    script = HEALTH.read_text()
    for kind in ("ImageOperation", "Workflow", "ImageSession"):
        assert health_cm["data"][f"resource.customizations.health.imageops.dev_{kind}"] == script
    flux = [d for d in yaml.safe_load_all(
        (REPO / "examples/gitops/flux-kustomization.yaml").read_text()) if d]
    kustomization = next(d for d in flux if d["kind"] == "Kustomization")
    assert kustomization["spec"]["wait"] is True and kustomization["spec"]["prune"] is True
    guide = (REPO / "docs/gitops.md").read_text()
    assert "test_reapply_unchanged_does_not_rerun_and_new_generation_does" in guide
