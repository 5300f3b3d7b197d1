"""How the simulated nodes of FakeAgentFleet behave: latency, failures, results."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from imageops.models.common import Action
from imageops.models.imageoperation import ImageOperationSpec
from imageops.services.backend import LayerCount, TransferProgress
from imageops.services.lifecycle import OperationResult

IMAGE_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class Latency:
    """A latency distribution: ``fixed:S``, ``uniform:A,B`` or ``lognormal:MEDIAN,SIGMA``."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Latency:
        """From ``kind:args`` (seconds)."""
        kind, _, args = text.partition(":")
        values = [float(v) for v in args.split(",") if v.strip()]
        if kind == "fixed" and len(values) == 1:
            return cls(kind, values[0])
        if kind in ("uniform", "lognormal") and len(values) == 2:
            return cls(kind, values[0], values[1])
        raise ValueError(f"latency {text!r}: fixed:S, uniform:A,B or lognormal:MEDIAN,SIGMA")

    def sample(self, rng: random.Random) -> float:
        """One latency in seconds (at most 60)."""
        if self.kind == "fixed":
            value = self.a
        elif self.kind == "uniform":
            value = rng.uniform(self.a, self.b)
        else:
            value = self.a * math.exp(rng.gauss(0.0, self.b))
        return min(max(value, 0.0), 60.0)


@dataclass(frozen=True)
class FleetProfile:
    """How the simulated nodes behave."""

    latency: Latency = field(default_factory=lambda: Latency("lognormal", 0.5, 0.5))
    failing_nodes: frozenset[str] = frozenset()  # every operation on these fails
    op_failure_rate: float = 0.0  # and this share of the others' operations
    max_concurrent: int = 5  # per node, as --max-concurrent
    start_grace: float = 0.5  # AgentConfig.start_grace
    seed: int = 1


def failing_nodes(nodes: Sequence[str], rate: float, seed: int = 1) -> frozenset[str]:
    """ceil(rate * N) of the nodes (none for rate 0), chosen reproducibly."""
    count = math.ceil(rate * len(nodes)) if rate > 0 else 0
    return frozenset(random.Random(seed).sample(sorted(nodes), min(count, len(nodes))))


def fake_digest(text: str) -> str:
    """A stable sha256 digest standing for an image."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def fake_result(spec: ImageOperationSpec) -> OperationResult:
    """What a real agent would report: same digest and image ID for the same source."""
    image = spec.image
    digest = image.split("@", 1)[1] if "@" in image else fake_digest(image)
    image_id = fake_digest("id:" + digest)
    if spec.action == Action.PULL:
        layer = LayerCount(id=image_id[7:19], bytes_done=IMAGE_BYTES, bytes_total=IMAGE_BYTES)
        progress = TransferProgress(1, 1, IMAGE_BYTES, IMAGE_BYTES, (layer,))
        return OperationResult(
            digest, image_id, IMAGE_BYTES, False, bytes_transferred=IMAGE_BYTES, progress=progress
        )
    if spec.action == Action.PUSH:
        return OperationResult(digest, image_id, IMAGE_BYTES, bytes_transferred=IMAGE_BYTES)
    return OperationResult(digest, image_id, IMAGE_BYTES)
