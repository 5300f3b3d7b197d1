from datetime import UTC, datetime, timedelta

from imageops.services.overdue import allowed_seconds, is_overdue, overdue_by_namespace
from imageops.services.progress_text import (
    eta_seconds,
    human_bytes,
    human_duration,
    percent,
    summary,
)


def test_summary_reads_like_the_issue_example() -> None:
    assert summary(120_000_000, 285_000_000, 2, 5) == "42% 120/285MB"
    assert summary(0, 0, 0, 0) == "0%"
    assert summary(0, 0, 1, 7) == "1/7 layers"
    assert summary(1_500_000_000, 2_000_000_000, 3, 4) == "75% 1.5/2.0GB"
    assert summary(512, 512, 1, 1) == "100% 512/512B"


def test_human_units_and_eta() -> None:
    assert human_bytes(999) == "999B"
    assert human_bytes(1_234_567) == "1.2MB"
    assert human_bytes(285_000_000) == "285MB"
    assert percent(5, 0) == 0 and percent(7, 5) == 100
    assert eta_seconds(50, 100, 10.0) == 5.0
    assert eta_seconds(100, 100, 10.0) is None and eta_seconds(1, 100, 0) is None
    assert human_duration(None) == "-"
    assert human_duration(65) == "1m05s" and human_duration(7300) == "2h01m"


def _op(ns: str, phase: str | None, started_ago: float | None, **spec: int) -> dict[str, object]:
    now = datetime.now(UTC)
    status: dict[str, object] = {}
    if phase:
        status["phase"] = phase
    if started_ago is not None:
        status["startTime"] = (now - timedelta(seconds=started_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"namespace": ns}, "spec": spec, "status": status}


def test_overdue_allows_every_attempt_and_retry_delay() -> None:
    # 4 attempts of 600 s (defaults), 3 retry waits of the cap, 60 s of slack.
    assert allowed_seconds({}, backoff_cap=60) == 4 * 600 + 3 * 60 + 60
    assert allowed_seconds({"timeoutSeconds": 10, "backoffLimit": 0}, backoff_cap=60) == 70
    now = datetime.now(UTC)
    assert is_overdue(_op("a", "Running", 100, timeoutSeconds=10, backoffLimit=0), now, 60)
    assert not is_overdue(_op("a", "Running", 30, timeoutSeconds=10, backoffLimit=0), now, 60)
    assert not is_overdue(_op("a", "Failed", 999, timeoutSeconds=1, backoffLimit=0), now, 60)
    assert not is_overdue(_op("a", "Running", None, timeoutSeconds=1), now, 60)


def test_overdue_counts_per_namespace_with_zeroes() -> None:
    bodies = [
        _op("a", "Running", 100, timeoutSeconds=10, backoffLimit=0),
        _op("a", "Running", 1, timeoutSeconds=10, backoffLimit=0),
        _op("b", None, None),
        _op("c", "Succeeded", 1000, timeoutSeconds=1, backoffLimit=0),
    ]
    assert overdue_by_namespace(bodies, datetime.now(UTC), 60) == {"a": 1, "b": 0, "c": 0}


def test_gauges_of_known_nodes_and_namespaces_replace_the_old_ones() -> None:
    from prometheus_client import REGISTRY

    from imageops.adapters import metrics

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    metrics.set_agents_up({"n1": True, "n2": False})
    assert sample("imageops_agent_up", node="n1") == 1
    assert sample("imageops_agent_up", node="n2") == 0
    metrics.set_agents_up({"n2": True})
    assert sample("imageops_agent_up", node="n1") is None
    assert sample("imageops_agent_up", node="n2") == 1
    metrics.set_overdue({"apps": 2})
    assert sample("imageops_operations_overdue", operation_namespace="apps") == 2
    metrics.set_overdue({})
    assert sample("imageops_operations_overdue", operation_namespace="apps") is None


def test_progress_wire_carries_the_summary_and_at_most_the_capped_layers() -> None:
    from imageops.models.common import MAX_PROGRESS_LAYERS, Progress
    from imageops.services.backend import LayerCount, TransferProgress
    from imageops.services.progress_text import progress_wire

    layers = tuple(LayerCount(f"{i:012x}", 1, 2) for i in range(MAX_PROGRESS_LAYERS + 5))
    wire = progress_wire(TransferProgress(0, len(layers), len(layers), 2 * len(layers), layers))
    assert wire["summary"] == "50% 69/138B"
    assert len(wire["layers"]) == MAX_PROGRESS_LAYERS
    # The status model (hence the CRD schema) accepts exactly what the agent writes.
    assert Progress.model_validate(wire).layers[0].bytes_total == 2
