"""Kubernetes API calls beyond what kopf does: Secrets, status patches, Events.

Plain JSON objects over :mod:`imageops.adapters.kubehttp` (no generated
models). Calls are blocking; async callers use :class:`AsyncKube`, which runs
each call in a thread so the event loop never waits on the API.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from imageops.adapters.kubehttp import JSON, REQUEST_TIMEOUT, ApiError, KubeHttp
from imageops.adapters.retries import retry_transient
from imageops.models.base import GROUP, VERSION

log = logging.getLogger(__name__)
T = TypeVar("T")
# Merge patches: ``None`` deletes a field, and lists (conditions) are replaced whole.
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class ObjectRef:
    """Enough of an object to patch it and to address Events to it."""

    api_version: str
    kind: str
    plural: str
    namespace: str
    name: str
    uid: str

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name), e.g. for log lines."""
        return self.namespace, self.name

    @classmethod
    def of(cls, obj: Any, plural: str) -> ObjectRef:
        """Build from a validated resource model (``api_version``, ``kind``, typed ``metadata``)."""
        meta = obj.metadata
        return cls(obj.api_version, obj.kind, plural, meta.namespace, meta.name, meta.uid)

    @classmethod
    def from_body(cls, body: Any, plural: str) -> ObjectRef:
        """Build from a kopf body or a plain dict of the object."""
        meta = body["metadata"]
        return cls(
            api_version=body.get("apiVersion", f"{GROUP}/{VERSION}"),
            kind=body["kind"],
            plural=plural,
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
        )


def unless_gone(call: Callable[[], T]) -> T | None:
    """Run one API call; None when the object it names does not exist (404)."""
    try:
        return call()
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def load_api_client() -> KubeHttp:
    """An API client from the in-cluster service account, else from KUBECONFIG."""
    return KubeHttp()


def custom_path(namespace: str | None, plural: str, name: str = "", sub: str = "") -> str:
    """The path of custom objects of this API group (namespace None: every namespace)."""
    scope = f"/namespaces/{namespace}" if namespace is not None else ""
    path = f"/apis/{GROUP}/{VERSION}{scope}/{plural}"
    return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def _microtime(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    """Blocking Kubernetes calls the operator makes itself (plain JSON objects)."""

    def __init__(self, api: KubeHttp, component: str, host: str | None = None) -> None:
        self.api = api
        self.component = component
        self.host = host or socket.gethostname()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = JSON,
        query: dict[str, Any] | None = None,
        accept: str = JSON,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> Any:
        """Any API call (see :meth:`KubeHttp.request`): the decoded JSON answer."""
        return self.api.request(method, path, body, content_type, query, timeout, accept)

    def get_secret(self, namespace: str, name: str) -> tuple[str | None, dict[str, str]] | None:
        """A Secret's type and base64 data, or None when it does not exist."""
        path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
        secret = unless_gone(lambda: self.api.request("GET", path))
        if secret is None:
            return None
        return secret.get("type"), dict(secret.get("data") or {})

    def patch_status(self, ref: ObjectRef, patch: dict[str, Any]) -> bool:
        """Merge-patch the status subresource; False when the object is gone."""
        path = custom_path(ref.namespace, ref.plural, ref.name, "status")
        done = unless_gone(lambda: self.api.request("PATCH", path, {"status": patch}, MERGE_PATCH))
        return done is not None

    def generation(self, ref: ObjectRef) -> int | None:
        """The object's metadata.generation, or None when it is gone (404)."""
        obj = self.get_custom(ref.namespace, ref.plural, ref.name)
        if obj is None:
            return None
        return int((obj.get("metadata") or {}).get("generation") or 1)

    def patch_object(self, ref: ObjectRef, patch: dict[str, Any]) -> bool:
        """Merge-patch the object itself (spec or metadata); False when it is gone."""
        path = custom_path(ref.namespace, ref.plural, ref.name)
        return unless_gone(lambda: self.api.request("PATCH", path, patch, MERGE_PATCH)) is not None

    def get_custom(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        """One custom object of this API group, or None."""
        obj = unless_gone(lambda: self.api.request("GET", custom_path(namespace, plural, name)))
        return None if obj is None else cast(dict[str, Any], obj)

    def list_custom(
        self, namespace: str | None, plural: str, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        """Custom objects of this API group in a namespace (None: every namespace)."""
        query = {"labelSelector": label_selector or None}
        result = self.api.request("GET", custom_path(namespace, plural), query=query)
        return list(result.get("items") or [])

    def served(self, namespace: str | None, plural: str) -> bool:
        """Whether the API server serves ``plural`` of this group (a list of one; 404: no)."""
        try:
            self.api.request(
                "GET", custom_path(namespace, plural), query={"limit": 1}, timeout=(3, 10)
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create_custom(
        self, namespace: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Create a custom object; None when it exists already (creation is idempotent)."""
        try:
            obj = self.api.request("POST", custom_path(namespace, plural), body)
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise
        return cast(dict[str, Any], obj)

    def delete_custom(self, namespace: str, plural: str, name: str) -> bool:
        """Delete a custom object (background propagation); False when it was gone."""
        options = {"propagationPolicy": "Background"}
        path = custom_path(namespace, plural, name)
        return unless_gone(lambda: self.api.request("DELETE", path, options)) is not None

    def apply_configmap(
        self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str] | None = None
    ) -> None:
        """Create or replace a ConfigMap."""
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "data": data,
        }
        path = f"/api/v1/namespaces/{namespace}/configmaps"
        try:
            self.api.request("POST", path, body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            self.api.request("PUT", f"{path}/{name}", body)

    def renew_lease(
        self, namespace: str, name: str, holder: str, duration: int, labels: dict[str, str]
    ) -> None:
        """Create or renew a Lease held by ``holder`` (the agent's heartbeat).

        Each call is bounded by half the lease duration, so that a call hanging on
        an API server without etcd gives way to a fresh one once the server is back.
        """
        timeout = (3.0, max(min(duration / 2, REQUEST_TIMEOUT[1]), 2.0))
        now = _microtime(datetime.now(UTC))
        spec = {"holderIdentity": holder, "leaseDurationSeconds": duration, "renewTime": now}
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        try:
            lease = self.api.request("GET", f"{path}/{name}", timeout=timeout)
        except ApiError as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {**spec, "acquireTime": now},
            }
            self.api.request("POST", path, body, timeout=timeout)
            return
        # The whole spec is replaced, as before; the read resourceVersion guards the write.
        lease["spec"] = spec
        self.api.request("PUT", f"{path}/{name}", lease, timeout=timeout)

    def post_event(self, ref: ObjectRef, etype: str, reason: str, message: str) -> None:
        """Record a core/v1 Event on the object (shown by kubectl describe)."""
        now = datetime.now(UTC)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": etype,
            "firstTimestamp": _time(now),
            "lastTimestamp": _time(now),
            "count": 1,
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": f"imageops.dev/{self.component}",
            "reportingInstance": self.host,
        }
        try:
            self.api.request("POST", f"/api/v1/namespaces/{ref.namespace}/events", event)
        except ApiError as exc:
            # Events are best effort: losing one must not fail the operation.
            log.warning(
                "could not post event %s on %s/%s: %s", reason, ref.namespace, ref.name, exc.reason
            )


class AsyncKube:
    """The same calls, run in threads so that kopf's event loop never blocks."""

    def __init__(self, kube: Kube) -> None:
        self.sync = kube

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run any blocking :class:`Kube` method (or other call) in a thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def get_secret(
        self, namespace: str, name: str
    ) -> tuple[str | None, dict[str, str]] | None:
        """See :meth:`Kube.get_secret`."""
        return await self.retrying(
            lambda: asyncio.to_thread(self.sync.get_secret, namespace, name),
            f"read Secret {namespace}/{name}",
        )

    async def patch_status(self, ref: ObjectRef, patch: dict[str, Any]) -> bool:
        """Write a status patch; retried until written, the object is gone or superseded.

        A status patch may carry an outcome (Succeeded, Failed, a retry) that
        exists nowhere else, so a transient failure (API server or etcd down, a
        timeout, a refused connection) never drops it: it is retried with
        capped backoff for as long as the process lives. Before each retry the
        object is read: a 404 or a generation newer than the patch's
        ``observedGeneration`` ends the retries (False), since nobody will read
        this result any more. Other errors (a 4xx) are raised.
        """
        generation = patch.get("observedGeneration")

        async def superseded() -> bool:
            current = await asyncio.to_thread(self.sync.generation, ref)
            if current is not None and (generation is None or current <= generation):
                return False
            state = "gone" if current is None else f"at generation {current}"
            log.info("status of %s/%s not written: object %s", ref.namespace, ref.name, state)
            return True

        written = await retry_transient(
            lambda: asyncio.to_thread(self.sync.patch_status, ref, patch),
            f"status write of {ref.namespace}/{ref.name}",
            superseded,
            False,
        )
        return bool(written)

    async def retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """Await ``call()`` until it does not fail transiently (capped backoff, no limit)."""
        return cast(T, await retry_transient(call, what))

    async def patch_object(self, ref: ObjectRef, patch: dict[str, Any]) -> bool:
        """See :meth:`Kube.patch_object`."""
        return await asyncio.to_thread(self.sync.patch_object, ref, patch)

    async def post_event(self, ref: ObjectRef, etype: str, reason: str, message: str) -> None:
        """See :meth:`Kube.post_event`."""
        await asyncio.to_thread(self.sync.post_event, ref, etype, reason, message)
