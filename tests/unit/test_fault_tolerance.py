"""Pure parts of fault tolerance: transient errors, liveness fairness, health, pull grants."""

from __future__ import annotations

import asyncio
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from urllib3.exceptions import MaxRetryError, ReadTimeoutError

from imageops.adapters.kube import AsyncKube
from imageops.adapters.kubehttp import ApiError
from imageops.adapters.metrics import WatchHealth
from imageops.adapters.pull_records import FilePullRecords
from imageops.adapters.retries import is_transient
from imageops.models.common import ErrorReason
from imageops.services.backend import RegistryAuth
from imageops.services.errors import OperationError
from imageops.services.pull_grants import ANONYMOUS, granted
from imageops.workers.nodes import NodeDirectory


def test_transient_errors_are_5xx_429_and_connection_failures() -> None:
    assert is_transient(ApiError(504, ""))
    assert is_transient(ApiError(500, ""))
    assert is_transient(ApiError(429, ""))
    assert is_transient(ApiError(0, ""))
    assert is_transient(ConnectionRefusedError())
    assert is_transient(MaxRetryError(None, "/x"))  # type: ignore[arg-type]
    assert is_transient(ReadTimeoutError(None, "/x", "read timed out"))  # type: ignore[arg-type]
    assert not is_transient(ApiError(422, ""))
    assert not is_transient(ApiError(403, ""))
    assert not is_transient(ValueError("bug"))


class FakeLeaseKube(AsyncKube):
    """Injects API failures the controller's lease reads would meet during an outage."""

    def __init__(self) -> None:
        self.sync = self  # type: ignore[assignment]
        self.read_agent_leases = None
        self.fail = False
        self.leases: dict[str, tuple[datetime, int]] = {}

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.fail:
            raise ConnectionRefusedError("API server down")
        return self.leases, {}


def test_no_node_is_judged_while_blind_or_before_a_lease_duration_after_recovery() -> None:
    kube = FakeLeaseKube()
    nodes = NodeDirectory(kube, "default", interval=1.0, lease_duration=6)
    old = datetime.now(UTC) - timedelta(seconds=120)
    kube.leases = {"n1": (old, 6)}
    assert nodes.blind() and nodes.down_for("n1") == 0.0  # nothing read yet
    asyncio.run(nodes.refresh())
    now = datetime.now(UTC)
    # Just recovered: the stale lease does not count until one lease duration has passed.
    assert not nodes.can_judge(now) and nodes.down_for("n1", now) == 0.0
    later = now + timedelta(seconds=7)
    nodes.last_read = later  # a fresh read at that time
    assert nodes.can_judge(later)
    assert 6.0 <= nodes.down_for("n1", later) <= 8.0  # counted from the recovery, not 120 s
    # A hanging read (no success for 2 * interval + 2 s) is blindness too.
    assert nodes.blind(later + timedelta(seconds=5))
    kube.fail = True
    try:
        asyncio.run(nodes.refresh())
    except ConnectionRefusedError:
        nodes.failed = True
    assert nodes.down_for("n1", later) == 0.0


def test_watch_health_ready_and_live() -> None:
    health = WatchHealth(["agent/imageoperations"], down_bound=0.05)
    assert not health.ready()[0] and "not started" in health.ready()[1]
    health.report("agent/imageoperations", True)
    assert health.ready() == (True, "") and health.live()[0]
    health.report("agent/imageoperations", False, "API server unreachable")
    assert not health.ready()[0] and health.live()[0]  # down, but not for long yet
    time.sleep(0.1)
    ok, why = health.live()
    assert not ok and "API server unreachable" in why


def test_pull_records_survive_a_restart_and_never_hold_the_secret(tmp_path: Path) -> None:
    auth = RegistryAuth("alice", "s3cret-password", "reg.example:5000")
    records = FilePullRecords(tmp_path)
    key = records.key(auth)
    assert key != ANONYMOUS and key != records.key(RegistryAuth("alice", "other", auth.registry))
    records.add("reg.example:5000/app", "sha256:1", key)
    reread = FilePullRecords(tmp_path)
    assert reread.key(auth) == key
    assert granted(reread.holders("reg.example:5000/app", "sha256:1"), key)
    assert not granted(reread.holders("reg.example:5000/app", "sha256:1"), ANONYMOUS)
    assert not granted(reread.holders("reg.example:5000/app", "sha256:2"), key)
    text = (tmp_path / "pulls.json").read_text()
    assert "s3cret-password" not in text and "alice" not in text
    assert stat.S_IMODE((tmp_path / "pulls.json").stat().st_mode) == 0o600
    reread.add("open/app", "sha256:3", ANONYMOUS)
    assert granted(reread.holders("open/app", "sha256:3"), key)  # anyone may pull it


def test_unwritable_state_dir_keeps_records_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    records = FilePullRecords(blocker / "state")
    records.add("r/app", "sha256:1", ANONYMOUS)
    assert granted(records.holders("r/app", "sha256:1"), ANONYMOUS)


def test_session_not_found_is_permanent_with_a_suggestion() -> None:
    error = OperationError(ErrorReason.SESSION_NOT_FOUND, "ImageSession x not found")
    info = error.to_info()
    assert not info.retryable and "sessionRef" in info.suggestion


def test_every_reason_has_a_metric_series_and_a_row_in_the_readme() -> None:
    from pathlib import Path

    from imageops.adapters import metrics

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    exposed = {s.labels["reason"] for m in metrics.ERRORS.collect() for s in m.samples}
    for reason in ErrorReason:
        assert f"| `{reason}` |" in readme, reason
        assert str(reason) in exposed, reason
