"""Kubernetes API calls beyond what kopf does: Secrets, status patches, Events.

The official client is blocking; async callers use :class:`AsyncKube`,
which runs each call in a thread so the event loop never waits on the API.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from imageops.adapters.retries import retry_transient
from imageops.models.base import GROUP, VERSION

log = logging.getLogger(__name__)
T = TypeVar("T")
# Merge patches: ``None`` deletes a field, and lists (conditions) are replaced whole.
MERGE_PATCH = "application/merge-patch+json"
# Connect and read timeouts of the operator's own calls: a hung API server (etcd down)
# must fail a call in bounded time so that it is retried, never wait for ever.
REQUEST_TIMEOUT = (5.0, 30.0)


@dataclass(frozen=True)
class ObjectRef:
    """Enough of an object to patch it and to address Events to it."""

    api_version: str
    kind: str
    plural: str
    namespace: str
    name: str
    uid: str

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
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def load_api_client() -> client.ApiClient:
    """An API client from the in-cluster service account, else from KUBECONFIG."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    settings = client.Configuration.get_default_copy()
    # One quick urllib3 retry at most: our own loops retry (with backoff, for ever where
    # it matters), and 3 retries of a 30 s read timeout would hide an outage for minutes.
    settings.retries = 1
    return client.ApiClient(settings)


class Kube:
    """Blocking Kubernetes calls the operator makes itself."""

    def __init__(self, api: client.ApiClient, component: str, host: str | None = None) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.coordination = client.CoordinationV1Api(api)
        self.component = component
        self.host = host or socket.gethostname()

    def get_secret(self, namespace: str, name: str) -> tuple[str | None, dict[str, str]] | None:
        """A Secret's type and base64 data, or None when it does not exist."""
        secret = unless_gone(
            lambda: self.core.read_namespaced_secret(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
        )
        if secret is None:
            return None
        # The client hands .data over still base64-encoded, as str.
        data = {
            k: v.decode() if isinstance(v, bytes) else v for k, v in (secret.data or {}).items()
        }
        return secret.type, data

    def patch_status(self, ref: ObjectRef, patch: dict[str, Any]) -> bool:
        """Merge-patch the status subresource; False when the object is gone."""
        done = unless_gone(
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                ref.namespace,
                ref.plural,
                ref.name,
                {"status": patch},
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
        return done is not None

    def generation(self, ref: ObjectRef) -> int | None:
        """The object's metadata.generation, or None when it is gone (404)."""
        obj = unless_gone(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP,
                VERSION,
                ref.namespace,
                ref.plural,
                ref.name,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
        if obj is None:
            return None
        meta = cast(dict[str, Any], obj).get("metadata") or {}
        return int(meta.get("generation") or 1)

    def patch_object(self, ref: ObjectRef, patch: dict[str, Any]) -> bool:
        """Merge-patch the object itself (spec or metadata); False when it is gone."""
        done = unless_gone(
            lambda: self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                ref.namespace,
                ref.plural,
                ref.name,
                patch,
                _content_type=MERGE_PATCH,
            )
        )
        return done is not None

    def get_custom(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        """One custom object of this API group, or None."""
        obj = unless_gone(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, _request_timeout=REQUEST_TIMEOUT
            )
        )
        return None if obj is None else cast(dict[str, Any], obj)

    def list_custom(
        self, namespace: str | None, plural: str, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        """Custom objects of this API group in a namespace (None: every namespace)."""
        if namespace is None:
            result = self.custom.list_cluster_custom_object(
                GROUP, VERSION, plural, label_selector=label_selector or None
            )
        else:
            result = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, label_selector=label_selector or None
            )
        return list(cast(dict[str, Any], result).get("items", []))

    def served(self, namespace: str | None, plural: str) -> bool:
        """Whether the API server serves ``plural`` of this group (a list of one; 404: no)."""
        kwargs: dict[str, Any] = {"limit": 1, "_request_timeout": (3.0, 10.0)}
        try:
            if namespace is None:
                self.custom.list_cluster_custom_object(GROUP, VERSION, plural, **kwargs)
            else:
                self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, **kwargs
                )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create_custom(
        self, namespace: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Create a custom object; None when it exists already (creation is idempotent)."""
        try:
            obj = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, body
            )
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise
        return cast(dict[str, Any], obj)

    def delete_custom(self, namespace: str, plural: str, name: str) -> bool:
        """Delete a custom object (background propagation); False when it was gone."""
        done = unless_gone(
            lambda: self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, propagation_policy="Background"
            )
        )
        return done is not None

    def apply_configmap(
        self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str] | None = None
    ) -> None:
        """Create or replace a ConfigMap."""
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=labels or {}),
            data=data,
        )
        try:
            self.core.create_namespaced_config_map(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.replace_namespaced_config_map(name, namespace, body)

    def read_agent_leases(
        self, namespace: str, label: str
    ) -> tuple[dict[str, tuple[datetime, int]], dict[str, dict[str, str]]]:
        """Agents' leases (node → renew time, duration) and every Node's labels."""
        leases: dict[str, tuple[datetime, int]] = {}
        for lease in self.coordination.list_namespaced_lease(
            namespace, label_selector=label, _request_timeout=(3.0, 10.0)
        ).items:
            # The holder is the node's full name (label values are cut at 63 characters).
            spec = lease.spec
            if spec and spec.holder_identity and spec.renew_time is not None:
                leases[spec.holder_identity] = (
                    spec.renew_time,
                    int(spec.lease_duration_seconds or 0),
                )
        labels = {
            n.metadata.name: dict(n.metadata.labels or {})
            for n in self.core.list_node(_request_timeout=(3.0, 10.0)).items
            if n.metadata and n.metadata.name
        }
        return leases, labels

    def renew_lease(
        self, namespace: str, name: str, holder: str, duration: int, labels: dict[str, str]
    ) -> None:
        """Create or renew a Lease held by ``holder`` (the agent's heartbeat).

        Each call is bounded by half the lease duration, so that a call hanging on
        an API server without etcd gives way to a fresh one once the server is back.
        """
        timeout = (3.0, max(min(duration / 2, REQUEST_TIMEOUT[1]), 2.0))
        now = datetime.now(UTC)
        spec = client.V1LeaseSpec(
            holder_identity=holder, lease_duration_seconds=duration, renew_time=now
        )
        try:
            lease = self.coordination.read_namespaced_lease(
                name, namespace, _request_timeout=timeout
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            spec.acquire_time = now
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
                spec=spec,
            )
            self.coordination.create_namespaced_lease(namespace, body, _request_timeout=timeout)
            return
        lease.spec = spec
        self.coordination.replace_namespaced_lease(name, namespace, lease, _request_timeout=timeout)

    def post_event(self, ref: ObjectRef, etype: str, reason: str, message: str) -> None:
        """Record a core/v1 Event on the object (shown by kubectl describe)."""
        now = datetime.now(UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{ref.name}.", namespace=ref.namespace),
            involved_object=client.V1ObjectReference(
                api_version=ref.api_version,
                kind=ref.kind,
                name=ref.name,
                namespace=ref.namespace,
                uid=ref.uid,
            ),
            reason=reason,
            message=message[:1024],
            type=etype,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=self.component, host=self.host),
            reporting_component=f"imageops.dev/{self.component}",
            reporting_instance=self.host,
        )
        try:
            self.core.create_namespaced_event(
                ref.namespace, event, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
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
