"""Kubernetes API calls beyond what kopf does: Secrets, status patches, Events.

The official client is blocking; async callers use :class:`AsyncKube`,
which runs each call in a thread so the event loop never waits on the API.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from imageops.models.base import GROUP, VERSION

log = logging.getLogger(__name__)
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


def load_api_client() -> client.ApiClient:
    """An API client from the in-cluster service account, else from KUBECONFIG."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


class Kube:
    """Blocking Kubernetes calls the operator makes itself."""

    def __init__(self, api: client.ApiClient, component: str, host: str | None = None) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.component = component
        self.host = host or socket.gethostname()

    def get_secret(self, namespace: str, name: str) -> tuple[str | None, dict[str, str]] | None:
        """A Secret's type and base64 data, or None when it does not exist."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return secret.type, dict(secret.data or {})

    def patch_status(self, ref: ObjectRef, patch: dict[str, Any]) -> bool:
        """Merge-patch the status subresource; False when the object is gone."""
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ref.namespace, ref.plural, ref.name, {"status": patch},
                _content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def patch_object(self, ref: ObjectRef, patch: dict[str, Any]) -> bool:
        """Merge-patch the object itself (spec or metadata); False when it is gone."""
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, ref.namespace, ref.plural, ref.name, patch,
                _content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

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
            self.core.create_namespaced_event(ref.namespace, event)
        except ApiException as exc:
            # Events are best effort: losing one must not fail the operation.
            log.warning("could not post event %s on %s/%s: %s", reason, ref.namespace, ref.name, exc.reason)


class AsyncKube:
    """The same calls, run in threads so that kopf's event loop never blocks."""

    def __init__(self, kube: Kube) -> None:
        self.sync = kube

    async def get_secret(self, namespace: str, name: str) -> tuple[str | None, dict[str, str]] | None:
        """See :meth:`Kube.get_secret`."""
        return await asyncio.to_thread(self.sync.get_secret, namespace, name)

    async def patch_status(self, ref: ObjectRef, patch: dict[str, Any]) -> bool:
        """See :meth:`Kube.patch_status`."""
        return await asyncio.to_thread(self.sync.patch_status, ref, patch)

    async def patch_object(self, ref: ObjectRef, patch: dict[str, Any]) -> bool:
        """See :meth:`Kube.patch_object`."""
        return await asyncio.to_thread(self.sync.patch_object, ref, patch)

    async def post_event(self, ref: ObjectRef, etype: str, reason: str, message: str) -> None:
        """See :meth:`Kube.post_event`."""
        await asyncio.to_thread(self.sync.post_event, ref, etype, reason, message)
