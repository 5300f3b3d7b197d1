"""Workflow graphs and run planning (services.dag, services.workflow_run): pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imageops.models.common import ErrorInfo, ErrorReason
from imageops.models.labels import NODE_LABEL, ROLE_LABEL, RUN_LABEL, STEP_LABEL, WORKFLOW_LABEL
from imageops.models.workflow import StepPhase, StepStatus, WorkflowSpec
from imageops.services import dag
from imageops.services.dag import ChildView, InvalidWorkflow
from imageops.services.workflow_run import (
    RunContext,
    RunInput,
    RunPlan,
    plan_run,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
ID1 = "sha256:" + "a" * 64
ID2 = "sha256:" + "b" * 64
ID0 = "sha256:" + "c" * 64
R, P, S, F, K, C = (
    StepPhase.RUNNING,
    StepPhase.PENDING,
    StepPhase.SUCCEEDED,
    StepPhase.FAILED,
    StepPhase.SKIPPED,
    StepPhase.CANCELLED,
)


def _spec(*steps: dict[str, Any], **extra: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"steps": list(steps), **extra})


def _pull(name: str = "pull", image: str = "reg:5000/app:1.0", **kw: Any) -> dict[str, Any]:
    return {"name": name, "action": "Pull", "image": image, **kw}


def _tag(name: str, target: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "action": "Tag", "target": target, **kw}


PROMOTION = _spec(
    _pull(),
    _tag("tag", "reg:5000/app:stable", imageFrom={"step": "pull"}, dependsOn=["pull"]),
    {
        "name": "push",
        "action": "Push",
        "target": "auth:5000/app:1.0",
        "imageFrom": {"step": "tag"},
        "dependsOn": ["tag"],
    },
)


# --- graph -----------------------------------------------------------------------------


def test_order_follows_dependencies_then_writing_order() -> None:
    spec = _spec(
        _tag("c", "x:1", image="a:1", dependsOn=["b"]),
        _pull("a", "a:1"),
        _pull("b", "b:1", dependsOn=["a"]),
        _pull("d", "d:1"),
    )
    graph = dag.build_graph(spec)
    assert graph.order == ("a", "b", "c", "d")
    assert graph.deps["c"] == ("b",)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [_pull("a", dependsOn=["b"]), _pull("b", dependsOn=["a"])],
            "dependency cycle: a -> b -> a",
        ),
        (
            [
                _pull("a"),
                _pull("b", dependsOn=["d"]),
                _pull("c", dependsOn=["b"]),
                _pull("d", dependsOn=["c"]),
            ],
            "dependency cycle: b -> d -> c -> b",
        ),
        ([_pull("a"), _pull("a")], "step name 'a' is used twice"),
        ([_pull("a", dependsOn=["zzz"])], "depends on unknown step(s) ['zzz']"),
        (
            [_pull("a"), _tag("t", "x:2", imageFrom={"step": "t"})],
            "imageFrom cannot name the step itself",
        ),
        (
            [_pull("a"), _tag("t", "x:2", imageFrom={"step": "zzz"})],
            "depends on unknown step(s) ['zzz']",
        ),
        (
            [_pull("a", dependsOn=["t"]), _tag("t", "x:2", imageFrom={"step": "a"})],
            "dependency cycle: a -> t -> a",
        ),
        (
            [
                _pull("a"),
                {"name": "p", "action": "Push", "imageFrom": {"step": "a"}, "dependsOn": ["a"]},
            ],
            "a Push with imageFrom needs a target",
        ),
    ],
)
def test_invalid_graphs_say_why(steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InvalidWorkflow) as err:
        dag.build_graph(_spec(*steps))
    assert message in str(err.value)


def test_image_from_implies_the_dependency_on_any_ancestor() -> None:
    """pull -> tag -> push, the push taking its image from the pull (an ancestor)."""
    graph = dag.build_graph(
        _spec(
            _pull(),
            _tag("tag", "reg:5000/app:stable", imageFrom={"step": "pull"}),
            {
                "name": "push",
                "action": "Push",
                "target": "auth:5000/app:1.0",
                "imageFrom": {"step": "pull"},
                "dependsOn": ["tag"],
            },
        )
    )
    assert graph.deps == {"pull": (), "tag": ("pull",), "push": ("tag", "pull")}
    assert graph.order == ("pull", "tag", "push")


def test_pinned_image_of_a_local_image_whose_digest_is_its_id() -> None:
    """A Tag of a never-pushed image reports its image ID as digest: the ID is the pin."""
    local = _child(
        "tag", action="Tag", image="local/only:1", target="x:1", digest=ID1, image_id=ID1
    )
    assert dag.pinned_image(local) == ID1


def test_find_cycle_including_a_self_loop() -> None:
    assert dag.find_cycle({"a": ["a"]}) == ["a", "a"]
    assert dag.find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert dag.find_cycle({"x": [], "a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]


def test_a_long_chain_is_fine() -> None:
    steps = [_pull("s0")] + [_pull(f"s{i}", dependsOn=[f"s{i - 1}"]) for i in range(1, 50)]
    assert dag.build_graph(_spec(*steps)).order[-1] == "s49"


# --- readiness -------------------------------------------------------------------------

DIAMOND = dag.build_graph(
    _spec(
        _pull("a"),
        _pull("b", dependsOn=["a"]),
        _pull("c", dependsOn=["a"]),
        _pull("d", dependsOn=["b", "c"]),
        _pull("e"),
    )
)


def test_advance_starts_what_is_ready() -> None:
    adv = dag.advance(DIAMOND, {}, stop=False)
    assert adv.start == ["a", "e"] and adv.phases["b"] is P
    adv = dag.advance(DIAMOND, {"a": S, "e": R}, stop=False)
    assert adv.start == ["b", "c"]
    adv = dag.advance(DIAMOND, {"a": S, "b": S, "c": R, "e": S}, stop=False)
    assert adv.start == [] and adv.phases["d"] is P


def test_advance_skips_dependents_of_a_failure_and_runs_the_rest() -> None:
    adv = dag.advance(DIAMOND, {"a": S, "b": F, "c": R}, stop=False)
    assert adv.phases["d"] is K and adv.start == ["e"] and adv.cancel == []
    assert adv.phases["c"] is R


def test_advance_stop_cancels_running_and_skips_pending() -> None:
    adv = dag.advance(DIAMOND, {"a": S, "b": F, "c": R, "e": R}, stop=True)
    assert adv.cancel == ["c", "e"] and adv.start == []
    assert (adv.phases["c"], adv.phases["d"], adv.phases["a"]) == (C, K, S)


def test_advance_holds_back_a_node_not_admitted() -> None:
    adv = dag.advance(DIAMOND, {}, stop=False, admitted=False)
    assert adv.start == [] and set(adv.phases.values()) == {P}


def test_admit_nodes_respects_parallelism() -> None:
    nodes = ["n1", "n2", "n3", "n4"]
    assert dag.admit_nodes(nodes, set(), set(), 2) == {"n1", "n2"}
    assert dag.admit_nodes(nodes, {"n1", "n2"}, {"n1"}, 2) == {"n1", "n2", "n3"}
    assert dag.admit_nodes(nodes, {"n1", "n2"}, set(), 2) == {"n1", "n2"}
    assert dag.admit_nodes(nodes, set(), set(), 10) == set(nodes)


# --- imageFrom, names, rollback --------------------------------------------------------


def _child(
    step: str | None,
    phase: StepPhase = S,
    *,
    node: str = "n1",
    action: str = "Pull",
    image: str = "reg:5000/app:1.0",
    target: str | None = None,
    **kw: Any,
) -> ChildView:
    return ChildView(
        name=f"wf-g1-{step}",
        node=node,
        step=step,
        action=action,
        image=image,
        target=target,
        phase=phase,
        **kw,
    )


def test_pinned_image_takes_the_repository_of_what_the_digest_belongs_to() -> None:
    pulled = _child("pull", digest=D1, image_id=ID1)
    assert dag.pinned_image(pulled) == f"reg:5000/app@{D1}"
    tagged = _child("tag", action="Tag", image=f"reg:5000/app@{D1}", target="x/y:2", digest=D1)
    assert dag.pinned_image(tagged) == f"reg:5000/app@{D1}"
    pushed = _child(
        "push", action="Push", image="local:1", target="auth:5000/team/app:1", digest=D2
    )
    assert dag.pinned_image(pushed) == f"auth:5000/team/app@{D2}"
    hub = _child("pull", image="busybox:1.36", digest=D1)
    assert dag.pinned_image(hub) == f"busybox@{D1}"


def test_pinned_image_falls_back_to_the_image_id() -> None:
    local = _child("tag", action="Tag", image="local/only:1", target="x:1", image_id=ID1)
    assert dag.pinned_image(local) == ID1
    with pytest.raises(InvalidWorkflow, match="neither a digest nor an image ID"):
        dag.pinned_image(_child("tag", action="Tag", image="a:1", target="b:1"))


def test_names_are_deterministic_and_bounded() -> None:
    assert dag.child_name("wf", 3, "pull") == "wf-g3-pull"
    fanned = dag.child_name("wf", 3, "pull", "node-a")
    assert (
        fanned
        == dag.child_name("wf", 3, "pull", "node-a")
        != dag.child_name("wf", 3, "pull", "node-b")
    )
    assert len(dag.child_name("w" * 63, 1000, "s" * 63, "n" * 253)) <= 253
    assert dag.rollback_name("wf", 1, "n", "a:1") != dag.rollback_name("wf", 1, "n", "a:2")
    assert dag.label_value("short") == "short"
    long = dag.label_value("node-" + "x" * 100)
    assert len(long) == 63 and long[-1].isalnum() and long == dag.label_value("node-" + "x" * 100)


def test_rollback_targets_restore_the_first_previous_image() -> None:
    children = [
        _child(
            "tag1",
            action="Tag",
            target="app:stable",
            image_id=ID1,
            previous_target_image_id=ID0,
            completion_time=T0,
        ),
        _child(
            "tag2",
            action="Tag",
            target="docker.io/library/app:stable",
            image_id=ID2,
            previous_target_image_id=ID1,
            completion_time=T0 + timedelta(seconds=1),
        ),
        _child("new", action="Tag", target="app:new", image_id=ID1),  # did not exist before
        _child(
            "same", action="Tag", target="app:same", image_id=ID1, previous_target_image_id=ID1
        ),  # did not move
        _child(
            "push", action="Push", target="reg/app:2", image_id=ID1, previous_target_image_id=ID2
        ),
        _child("failed", F, action="Tag", target="app:f", previous_target_image_id=ID2),
        _child(None, action="Tag", target="app:rb", previous_target_image_id=ID2),  # a rollback
    ]
    assert dag.rollback_targets(children) == [("app:stable", ID0), ("reg/app:2", ID2)]


def test_step_fields_prefer_the_step_then_the_workflow() -> None:
    spec = _spec(
        _pull("a", backoffLimit=1),
        _pull("b", credentials={"secretRef": {"name": "s"}}),
        defaults={"backoffLimit": 5, "timeoutSeconds": 30},
        credentials={"secretRef": {"name": "wf"}},
    )
    a, b = (dag.step_fields(s, spec) for s in spec.steps)
    assert (a["backoffLimit"], a["timeoutSeconds"], a["credentials"]) == (
        1,
        30,
        {"secretRef": {"name": "wf"}},
    )
    assert (b["backoffLimit"], b["credentials"]) == (5, {"secretRef": {"name": "s"}})
    assert "name" not in a and "dependsOn" not in a and "image" not in a
    assert "backoffLimit" not in dag.step_fields(PROMOTION.steps[0], PROMOTION)


# --- run planning ----------------------------------------------------------------------

RUN = RunContext("ns", "wf", "uid-1", 1, session="wf")


def _plan(
    spec: WorkflowSpec,
    children: list[ChildView] | None = None,
    *,
    nodes: tuple[str, ...] = ("n1",),
    **kw: Any,
) -> RunPlan:
    fan_out = bool(spec.all_nodes)
    return plan_run(
        RunInput(
            run=RUN,
            spec=spec,
            graph=dag.build_graph(spec),
            nodes=nodes,
            fan_out=fan_out,
            now=T0,
            children=children or [],
            **kw,
        )
    )


def _phases(plan: RunPlan, node: str = "n1") -> dict[str, StepPhase]:
    return {s: StepPhase(st.phase) for s, st in plan.steps[node].items()}


def test_a_new_run_creates_the_first_step_with_labels_owner_and_session() -> None:
    plan = _plan(PROMOTION)
    assert _phases(plan) == {"pull": R, "tag": P, "push": P} and plan.delete == []
    [body] = plan.create
    assert body["metadata"]["name"] == "wf-g1-pull"
    assert body["metadata"]["labels"] == {
        WORKFLOW_LABEL: "wf",
        STEP_LABEL: "pull",
        NODE_LABEL: "n1",
        RUN_LABEL: "1",
    }
    assert body["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "imageops.dev/v1alpha1",
            "kind": "Workflow",
            "name": "wf",
            "uid": "uid-1",
            "controller": True,
        }
    ]
    assert body["spec"] == {
        "action": "Pull",
        "image": "reg:5000/app:1.0",
        "nodeName": "n1",
        "sessionRef": {"name": "wf"},
        "force": False,
        "dryRun": False,
    }
    assert plan.steps["n1"]["pull"].operation_name == "wf-g1-pull"
    assert plan.steps["n1"]["pull"].start_time == T0


def test_image_from_pins_the_digest_of_the_earlier_step() -> None:
    pulled = _child("pull", digest=D1, image_id=ID1)
    plan = _plan(PROMOTION, [pulled])
    [body] = plan.create
    assert body["spec"]["image"] == f"reg:5000/app@{D1}"
    assert body["spec"]["target"] == "reg:5000/app:stable"
    tagged = _child(
        "tag",
        action="Tag",
        image=f"reg:5000/app@{D1}",
        target="reg:5000/app:stable",
        digest=D1,
        image_id=ID1,
    )
    [push] = _plan(PROMOTION, [pulled, tagged]).create
    assert push["spec"]["image"] == f"reg:5000/app@{D1}"
    assert push["spec"]["target"] == "auth:5000/app:1.0"


def test_a_step_recorded_as_started_but_not_seen_is_created_again() -> None:
    recorded = {
        "n1": {
            "pull": StepStatus(
                phase=R, operation_name="wf-g1-pull", start_time=T0 - timedelta(seconds=5)
            )
        }
    }
    plan = _plan(PROMOTION, recorded=recorded)
    assert [b["metadata"]["name"] for b in plan.create] == ["wf-g1-pull"]
    assert plan.steps["n1"]["pull"].start_time == T0 - timedelta(seconds=5)


def test_fail_fast_cancels_running_and_skips_pending() -> None:
    spec = _spec(_pull("a"), _pull("b"), _pull("c", dependsOn=["a"]), _pull("d"))
    error = ErrorInfo(reason=ErrorReason.NOT_FOUND, message="no such image", retryable=False)
    plan = _plan(spec, [_child("a", F, error=error), _child("b", R)])
    assert _phases(plan) == {"a": F, "b": C, "c": K, "d": K}
    assert plan.delete == ["wf-g1-b"] and plan.create == []
    assert plan.stop_reason == "step a failed"
    assert plan.steps["n1"]["a"].error == error
    cancelled = plan.steps["n1"]["b"]
    assert cancelled.error is not None and cancelled.error.reason == ErrorReason.CANCELLED
    assert cancelled.completion_time == T0


def test_without_fail_fast_independent_branches_go_on() -> None:
    spec = _spec(_pull("a"), _pull("b"), _pull("c", dependsOn=["a"]), _pull("d"), failFast=False)
    plan = _plan(spec, [_child("a", F), _child("b", R)])
    assert _phases(plan) == {"a": F, "b": R, "c": K, "d": R}
    assert [b["metadata"]["name"] for b in plan.create] == ["wf-g1-d"]
    assert plan.delete == [] and plan.stop_reason is None


def test_deadline_stops_everything() -> None:
    spec = _spec(_pull("a"), _pull("b", dependsOn=["a"]), activeDeadlineSeconds=5)
    plan = _plan(spec, [_child("a", R)], deadline_exceeded=True)
    assert _phases(plan) == {"a": C, "b": K} and plan.delete == ["wf-g1-a"]
    assert plan.stop_reason == "activeDeadlineSeconds (5s) exceeded"


def test_a_refused_child_fails_its_step() -> None:
    why = ErrorInfo(reason=ErrorReason.INVALID_WORKFLOW, message="refused", retryable=False)
    plan = _plan(PROMOTION, rejected={("n1", "pull"): why})
    assert _phases(plan) == {"pull": F, "tag": K, "push": K} and plan.create == []
    assert plan.steps["n1"]["pull"].error == why


def test_a_decided_plan_is_stable_when_replayed_from_its_status() -> None:
    spec = _spec(_pull("a"), _pull("b"), _pull("c", dependsOn=["a"]))
    first = _plan(spec, [_child("a", F), _child("b", R)])
    later = plan_run(
        RunInput(
            run=RUN,
            spec=spec,
            graph=dag.build_graph(spec),
            nodes=("n1",),
            fan_out=False,
            now=T0 + timedelta(seconds=30),
            children=[_child("a", F)],
            recorded=first.steps,
        )
    )
    assert later.steps == first.steps and later.create == []


FAN = _spec(
    _pull("a"),
    _tag("b", "app:warm", image="reg:5000/app:1.0", dependsOn=["a"]),
    allNodes=True,
    nodeSelector={"pool": "x"},
    parallelism=2,
)


def test_fan_out_runs_the_graph_per_node_within_parallelism() -> None:
    plan = _plan(FAN, nodes=("n1", "n2", "n3"))
    names = sorted(b["metadata"]["name"] for b in plan.create)
    assert names == sorted(dag.child_name("wf", 1, "a", n) for n in ("n1", "n2"))
    assert _phases(plan, "n3") == {"a": P, "b": P}
    assert {b["spec"]["nodeName"] for b in plan.create} == {"n1", "n2"}
    done = [
        _child("a", node="n1"),
        _child("b", node="n1", action="Tag", target="app:warm"),
        _child("a", R, node="n2"),
    ]
    plan = _plan(FAN, done, nodes=("n1", "n2", "n3"))
    # n1 is done, so n3 takes its place; n2's b still waits for its a.
    assert [(b["spec"]["nodeName"], b["metadata"]["labels"][STEP_LABEL]) for b in plan.create] == [
        ("n3", "a")
    ]


def test_fan_out_fail_fast_stops_every_node() -> None:
    plan = _plan(
        FAN, [_child("a", F, node="n1"), _child("a", R, node="n2")], nodes=("n1", "n2", "n3")
    )
    assert _phases(plan, "n2") == {"a": C, "b": K} and _phases(plan, "n3") == {"a": K, "b": K}
    assert plan.delete == [dag.child_name("wf", 1, "a", "n2")]
    assert plan.stop_reason == "step a on node n1 failed"


ROLLBACK = _spec(
    _pull("pull"),
    _tag("tag", "app:stable", imageFrom={"step": "pull"}, dependsOn=["pull"]),
    {
        "name": "push",
        "action": "Push",
        "target": "auth:5000/app:1",
        "imageFrom": {"step": "tag"},
        "dependsOn": ["tag"],
    },
    onFailure="Rollback",
    defaults={"backoffLimit": 1},
)


def test_a_failed_run_rolls_back_the_tags_it_moved() -> None:
    children = [
        _child("pull", digest=D1, image_id=ID1),
        _child(
            "tag", action="Tag", target="app:stable", image_id=ID1, previous_target_image_id=ID0
        ),
        _child("push", F, action="Push", target="auth:5000/app:1"),
    ]
    plan = _plan(ROLLBACK, children)
    assert plan.rollback.wanted and plan.rollback.pending
    [body] = plan.create
    assert body["metadata"]["name"] == dag.rollback_name("wf", 1, "n1", "app:stable")
    assert body["metadata"]["labels"][ROLE_LABEL] == "rollback"
    assert STEP_LABEL not in body["metadata"]["labels"]
    assert body["spec"] == {
        "action": "Tag",
        "image": ID0,
        "target": "app:stable",
        "force": True,
        "nodeName": "n1",
        "backoffLimit": 1,
    }
    restored = ChildView(
        name=body["metadata"]["name"],
        node="n1",
        step=None,
        action="Tag",
        image=ID0,
        target="app:stable",
        phase=S,
    )
    plan = _plan(ROLLBACK, children, rollbacks=[restored])
    assert plan.create == [] and not plan.rollback.pending
    assert plan.rollback.restored == ["app:stable"]


def test_no_rollback_while_steps_run_or_when_everything_succeeded() -> None:
    running = [_child("pull", F), _child("tag", R, action="Tag", target="app:stable")]
    spec = ROLLBACK.model_copy(update={"fail_fast": False})
    assert not _plan(spec, running).rollback.wanted
    ok = [
        _child("pull", digest=D1),
        _child(
            "tag", action="Tag", target="app:stable", previous_target_image_id=ID0, image_id=ID1
        ),
        _child("push", action="Push", target="auth:5000/app:1", digest=D2),
    ]
    assert not _plan(ROLLBACK, ok).rollback.wanted


def test_a_step_waits_while_the_step_it_takes_the_image_from_is_not_seen() -> None:
    # Right after a restart the status may know more than the controller's index.
    recorded = {"n1": {"pull": StepStatus(phase=S, operation_name="wf-g1-pull", digest=D1)}}
    plan = _plan(PROMOTION, recorded=recorded)
    assert _phases(plan) == {"pull": S, "tag": P, "push": P} and plan.create == []
