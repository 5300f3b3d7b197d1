"""The placement policy shared by the assigner and the workflow reconciler."""

from __future__ import annotations

from imageops.services.placement import Request, least_busy, node_load, place_operation, place_run


def test_node_load_counts_pending_and_running_only() -> None:
    load = node_load(
        [("a", "Running"), ("a", None), ("b", "Pending"), ("b", "Succeeded"), (None, "Running")]
    )
    assert load == {"a": 2, "b": 1}


def test_least_busy_breaks_ties_by_name() -> None:
    assert least_busy(["c", "b", "a"], {"a": 2}) == "b"
    assert least_busy([], {}) is None


def test_an_operation_goes_to_its_session_node_else_the_least_busy_live_node() -> None:
    assert place_operation(Request(session_node="s"), ["a"], {}) == "s"
    assert place_operation(Request(), ["a", "b"], {"a": 1}) == "b"
    assert place_operation(Request(), [], {}) is None


def test_a_run_goes_to_its_node_its_session_node_or_fans_out() -> None:
    assert place_run(Request(node_name="n", session_node="s"), ["a"], {}, 10) == ("n",)
    assert place_run(Request(session_node="s"), ["a"], {}, 10) == ("s",)
    assert place_run(Request(session_node="s", all_nodes=True), ["a", "b"], {}, 1) == ("a",)
    assert place_run(Request(), ["a", "b"], {"a": 3}, 10) == ("b",)
    assert place_run(Request(), [], {}, 10) == ()
