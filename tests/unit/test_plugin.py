"""kubectl imageops: the objects it creates, explain, and what watch shows (no API server)."""

from __future__ import annotations

import io
import json

import pytest

from imageops.models.common import ErrorReason
from imageops.plugin import view
from imageops.plugin.explain import explain
from imageops.plugin.main import build_parser
from imageops.plugin.objects import InvalidRequest, Request, build, parse_selector
from imageops.plugin.render import JsonView, PlainView, RateMeter, final_lines, make_view
from imageops.services.errors import RETRYABLE, SUGGESTIONS


def test_pull_on_a_node_is_an_image_operation() -> None:
    plural, body = build(
        Request("Pull", "reg.local/app:1", node="n1", session="s", credentials="cred", dry_run=True)
    )
    assert plural == "imageoperations"
    assert body["kind"] == "ImageOperation" and body["metadata"] == {"generateName": "pull-"}
    assert body["spec"] == {
        "action": "Pull",
        "image": "reg.local/app:1",
        "nodeName": "n1",
        "sessionRef": {"name": "s"},
        "dryRun": True,
        "credentials": {"secretRef": {"name": "cred"}},
    }


def test_all_nodes_is_a_fan_out_workflow() -> None:
    plural, body = build(
        Request(
            "Pull",
            "reg.local/app:1",
            selector={"pool": "gpu"},
            all_nodes=True,
            name="warm",
            parallelism=4,
        )
    )
    assert plural == "workflows" and body["metadata"] == {"name": "warm"}
    assert body["spec"] == {
        "steps": [{"name": "pull", "action": "Pull", "image": "reg.local/app:1"}],
        "allNodes": True,
        "nodeSelector": {"pool": "gpu"},
        "parallelism": 4,
    }


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (Request("Tag", "a:1"), "TARGET"),
        (Request("Pull", "a:1", target="b:1"), "no TARGET"),
        (Request("Pull", "a:1", all_nodes=True), "--selector"),
        (Request("Pull", "a:1", node="n", selector={"a": "b"}), "--node excludes"),
        (Request("Pull", "Bad Ref"), "image"),
    ],
)
def test_bad_requests_are_refused(request_: Request, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        build(request_)


def test_selector_and_kubectl_options() -> None:
    assert parse_selector("a=b, c=d") == {"a": "b", "c": "d"}
    with pytest.raises(InvalidRequest):
        parse_selector("nokey")
    args = build_parser().parse_args(
        ["pull", "x:1", "-n", "ns", "--context", "c", "--kubeconfig", "k", "-o", "yaml", "--wait"]
    )
    assert (args.namespace, args.context, args.kubeconfig, args.output, args.wait) == (
        "ns",
        "c",
        "k",
        "yaml",
        True,
    )
    assert build_parser().parse_args(["get", "-A"]).all_namespaces


def test_explain_uses_the_suggestions_of_services_errors() -> None:
    for reason in ErrorReason:
        out = io.StringIO()
        assert explain(str(reason).lower(), out) == 0
        text = out.getvalue()
        assert f"REASON:     {reason}" in text and SUGGESTIONS.get(reason, "") in text
        assert ("yes:" if reason in RETRYABLE else "no:") in text
    out = io.StringIO()
    assert explain("RateLimited", out, "json") == 0
    assert json.loads(out.getvalue()) == {
        "reason": "RateLimited",
        "retryable": True,
        "suggestion": SUGGESTIONS[ErrorReason.RATE_LIMITED],
    }
    assert explain("NoSuchReason", io.StringIO()) == 2


def _op(phase: str, **status: object) -> dict[str, object]:
    return {
        "metadata": {"name": "op", "namespace": "ns", "generation": 1},
        "spec": {"image": "reg/app:1"},
        "status": {"phase": phase, "observedGeneration": 1, **status},
    }


def test_operation_view_has_a_bar_per_layer_and_the_final_facts() -> None:
    layers = [
        {"id": "a" * 12, "bytesDone": 5, "bytesTotal": 10, "done": False},
        {"id": "b" * 12, "bytesDone": 10, "bytesTotal": 10, "done": True},
    ]
    snap = view.operation(
        _op("Running", progress={"layers": layers, "bytesDone": 15, "bytesTotal": 20})
    )
    assert [(b.label, b.phase) for b in snap.bars] == [
        ("a" * 12, "Running"),
        ("b" * 12, "Succeeded"),
    ]
    assert (snap.bytes_done, snap.bytes_total, snap.finished) == (15, 20, False)
    failed = view.operation(_op("Failed", lastError={"reason": "NotFound", "message": "gone"}))
    assert failed.finished and not failed.succeeded
    assert final_lines(failed) == [
        "Failed imageoperation/op",
        "  error: NotFound: gone",
        f"  suggestion: {SUGGESTIONS[ErrorReason.NOT_FOUND]}",
    ]
    # A status of an older generation is not this generation's result.
    stale = _op("Succeeded")
    stale["metadata"]["generation"] = 2  # type: ignore[index]
    assert view.operation(stale).phase == "Pending"


def test_fan_out_view_sums_children_per_node() -> None:
    wf = {
        "metadata": {"name": "w", "namespace": "ns", "generation": 1},
        "status": {
            "phase": "Running",
            "observedGeneration": 1,
            "nodes": {"n1": {"phase": "Running"}, "n2": {"phase": "Succeeded"}},
        },
    }
    children = [
        {
            "metadata": {"labels": {"imageops.dev/node": "n1"}},
            "status": {"phase": "Running", "progress": {"bytesDone": 3, "bytesTotal": 9}},
        },
        {
            "metadata": {"labels": {"imageops.dev/node": "n2"}},
            "status": {"phase": "Succeeded", "cacheHit": True, "sizeBytes": 9},
        },
    ]
    snap = view.workflow(wf, children)
    assert [(b.label, b.phase, b.bytes_done, b.bytes_total, b.note) for b in snap.bars] == [
        ("n1", "Running", 3, 9, ""),
        ("n2", "Succeeded", 9, 9, "cached"),
    ]


def test_a_summarised_fan_out_shows_the_digest_all_nodes_agree_on() -> None:
    digest = "sha256:" + "a" * 64
    summary = {"nodes": 30, "digest": digest, "digestNodes": 30}
    wf = {
        "metadata": {"name": "w", "namespace": "ns", "generation": 1},
        "status": {
            "phase": "Succeeded",
            "observedGeneration": 1,
            "nodes": {f"n{i}": {"phase": "Succeeded"} for i in range(30)},
            "succeeded": {"pull": summary},
        },
    }
    assert view.workflow(wf, []).digest == digest
    summary["digestNodes"] = 29  # one node reported another digest: none is the result
    assert view.workflow(wf, []).digest is None


def test_piped_and_json_views() -> None:
    out = io.StringIO()
    assert isinstance(make_view(out, None), PlainView)
    assert isinstance(make_view(out, "json"), JsonView)
    plain = PlainView(out)
    running = view.operation(
        _op("Running", progress={"bytesDone": 50_000_000, "bytesTotal": 100_000_000})
    )
    plain.show(running)
    plain.show(running)  # unchanged: no second line
    assert out.getvalue().splitlines() == ["reg/app:1  Running  50% 50/100MB"]
    meter = RateMeter()
    assert meter.observe("x", 0, now=0.0) == 0.0
    assert meter.observe("x", 10_000_000, now=2.0) == pytest.approx(5_000_000)


def test_a_session_view_is_over_once_the_session_counted_every_operation() -> None:
    sess: dict[str, object] = {
        "metadata": {"name": "rel", "namespace": "ns"},
        "status": {"phase": "Idle", "jobs": {"succeeded": 1, "failed": 0, "active": 0}},
    }
    ops = [_op("Succeeded"), _op("Succeeded")]
    # Both operations are done, but the session has folded only one of them yet.
    assert not view.session(sess, ops).finished
    sess["status"] = {"phase": "Idle", "jobs": {"succeeded": 2, "failed": 0, "active": 0}}
    snap = view.session(sess, ops)
    assert snap.finished and snap.message == "2 succeeded, 0 failed, 0 active"
