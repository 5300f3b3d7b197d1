"""Benchmark images (random data, so compression cannot shrink them) and the registry's log."""

from __future__ import annotations

import io
import os
import re
import tarfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.testbed import Testbed

MB = 1024 * 1024


@dataclass(frozen=True)
class ImageSize:
    """One image shape of the overhead benchmark."""

    label: str
    total_bytes: int
    layers: int


SIZES = (
    ImageSize("5MB-1layer", 5 * MB, 1),
    ImageSize("50MB-10layers", 50 * MB, 10),
    ImageSize("200MB-1layer", 200 * MB, 1),
)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_image(bed: Testbed, ref: str, size: ImageSize) -> str:
    """Build ``ref`` locally: ``docker import`` of the first layer, one build for the rest.

    Every layer is fresh random data, so nothing is shared with earlier images: a push
    really uploads (no cross-repository mount) and a pull really downloads.
    """
    per_layer = size.total_bytes // size.layers
    first = _tar({"layer0.bin": os.urandom(per_layer), "id": uuid.uuid4().bytes})
    bed.docker("import", "-", ref, input_bytes=first)
    if size.layers > 1:
        files = {f"layer{i}.bin": os.urandom(per_layer) for i in range(1, size.layers)}
        steps = "".join(f"COPY {name} /{name}\n" for name in files)
        context = _tar({"Dockerfile": f"FROM {ref}\n{steps}".encode(), **files})
        bed.docker("build", "--network", "host", "-q", "-t", ref, "-", input_bytes=context)
    return ref


def remove_image(bed: Testbed, *refs: str) -> None:
    """Remove local tags and, with the last tag, the layers (so a pull really transfers)."""
    bed.docker("rmi", "--force", *refs, check=False)


def absent(bed: Testbed, ref: str) -> bool:
    """Whether the daemon has no image under ``ref``."""
    return bed.image_id(ref) is None


_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>/v2/\S+) HTTP/[\d.]+" (?P<status>\d{3})')


@dataclass(frozen=True)
class Request:
    """One request in the registry's access log."""

    method: str
    path: str
    status: int


class RegistryLog:
    """The access log of a test-bed registry, read from a remembered offset."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def mark(self) -> int:
        """The current end of the log."""
        return self.path.stat().st_size

    def since(self, offset: int, repo: str, settle: float = 1.0) -> list[Request]:
        """Requests for ``repo`` logged after ``offset`` (waits ``settle`` s for stragglers)."""
        time.sleep(settle)
        with self.path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
        prefix = f"/v2/{repo}/"
        found = []
        for line in text.splitlines():
            match = _LINE.search(line)
            if match and match["path"].startswith(prefix):
                found.append(Request(match["method"], match["path"], int(match["status"])))
        return found


def blob_fetches(requests: list[Request]) -> Counter[str]:
    """GETs of blobs (not HEADs) per digest."""
    return Counter(
        r.path.rsplit("/", 1)[1]
        for r in requests
        if r.method == "GET" and "/blobs/sha256:" in r.path and r.status < 400
    )


def tag_lookups(requests: list[Request]) -> int:
    """Manifest requests by tag (HEAD or GET, not by digest): one per pull reaching the registry."""
    return sum(
        1
        for r in requests
        if r.method in ("GET", "HEAD")
        and "/manifests/" in r.path
        and not r.path.rsplit("/", 1)[1].startswith("sha256:")
    )
