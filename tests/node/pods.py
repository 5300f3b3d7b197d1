"""What the node tests do as a user would: kubectl apply, Pods that must start, statuses."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import yaml

from tests.e2e.chart_helpers import kubectl
from tests.e2e.harness import wait_until
from tests.testbed import Testbed, require

Obj = dict[str, Any]


def runnable_image(testbed: Testbed, ref: str, size: int, layers: int) -> str:
    """``ref`` built on the bed's seed image (busybox: Pods can run ``sleep``), with
    ``layers`` layers of random data, ``size`` bytes in all."""
    seed = require(["IMAGEOPS_SEED_IMAGE"])["IMAGEOPS_SEED_IMAGE"]
    files = {f"blob{i}": os.urandom(max(size // layers, 1)) for i in range(layers)}
    lines = [
        f"FROM {seed}",
        *(f"COPY {name} /{name}" for name in files),
        f"LABEL imageops.test/id={uuid.uuid4().hex}",
    ]
    testbed._build(ref, "\n".join(lines) + "\n", files)
    return ref


def apply(doc: Obj) -> None:
    """``kubectl apply -f -`` of one object."""
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))


def get(kind: str, name: str, namespace: str) -> Obj | None:
    """``kubectl get -o json``, or None when absent."""
    out = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if out.returncode != 0:
        if "NotFound" in out.stderr:
            return None
        raise AssertionError(out.stderr)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def listed(kind: str, namespace: str, selector: str) -> list[Obj]:
    """``kubectl get -l`` items."""
    out = kubectl("get", kind, "-n", namespace, "-l", selector, "-o", "json")
    return json.loads(out.stdout)["items"]  # type: ignore[no-any-return]


def wait_phase(
    kind: str,
    name: str,
    namespace: str,
    timeout: float = 180,
    phases: tuple[str, ...] = ("Succeeded", "Failed"),
) -> Obj:
    """Wait until ``status.phase`` is one of ``phases``; the status."""

    def check() -> Obj | None:
        status = (get(kind, name, namespace) or {}).get("status") or {}
        return status if status.get("phase") in phases else None

    return wait_until(check, timeout, f"{kind} {namespace}/{name} in {phases}", 0.5)  # type: ignore[no-any-return]


def pull_operation(name: str, namespace: str, image: str, node: str) -> Obj:
    """An ImageOperation Pull onto ``node``."""
    return {
        "apiVersion": "imageops.dev/v1alpha1",
        "kind": "ImageOperation",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "action": "Pull",
            "image": image,
            "nodeName": node,
            "pullPolicy": "Always",
            "timeoutSeconds": 300,
        },
    }


def start_pod(
    namespace: str, node: str, image: str, policy: str = "Never", timeout: float = 120
) -> tuple[float, list[str]]:
    """A Pod running ``image`` on ``node``: seconds from create to Running, its Events."""
    name = f"use-{uuid.uuid4().hex[:8]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "app",
                    "image": image,
                    "imagePullPolicy": policy,
                    "command": ["sleep", "3600"],
                }
            ],
        },
    }
    start = time.monotonic()
    apply(pod)

    def running() -> bool:
        got = get("pod", name, namespace) or {}
        phase = (got.get("status") or {}).get("phase")
        if phase in ("Failed", "Succeeded"):
            raise AssertionError(f"pod {name} ended {phase}: {got.get('status')}")
        waiting = [
            (c.get("state") or {}).get("waiting") or {}
            for c in (got.get("status") or {}).get("containerStatuses") or []
        ]
        bad = [w for w in waiting if w.get("reason") in ("ErrImageNeverPull", "ErrImagePull")]
        if bad:
            raise AssertionError(f"pod {name} cannot start: {bad}")
        return phase == "Running"

    wait_until(running, timeout, f"pod {name} Running", 0.1)
    seconds = time.monotonic() - start
    return seconds, events(namespace, name)


def events(namespace: str, name: str) -> list[str]:
    """'Reason: message' of the Events about ``name``."""
    out = kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
    )
    return [f"{e.get('reason')}: {e.get('message')}" for e in json.loads(out.stdout)["items"]]


def delete_pods(namespace: str) -> None:
    """Remove the test's Pods at once (their images may then be removed)."""
    kubectl(
        "delete",
        "pods",
        "--all",
        "-n",
        namespace,
        "--grace-period=0",
        "--force",
        "--wait=true",
        check=False,
    )
