"""The API calls of ``kubectl imageops``: a kubeconfig client for one person's terminal.

kubectl's conventions: ``--kubeconfig`` (else $KUBECONFIG, else ~/.kube/config),
``--context``, and the context's namespace when ``-n`` is not given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from imageops.models.base import GROUP, VERSION

Obj = dict[str, Any]
_UNREACHABLE = (OSError, urllib3.exceptions.HTTPError)


class PluginError(Exception):
    """A failure to show to the person as it is (no traceback)."""


@dataclass(frozen=True)
class Connection:
    """Where to connect, as kubectl's global options say."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None


def _context_namespace(conn: Connection) -> str:
    """The namespace of the chosen (or current) context, else "default", as kubectl does."""
    try:
        contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=conn.kubeconfig
        )
    except (config.ConfigException, OSError):
        return "default"
    if conn.context:
        active = next((c for c in contexts if c["name"] == conn.context), active)
    return str((active or {}).get("context", {}).get("namespace") or "default")


class PluginClient:
    """Create, read and list the three kinds, by plural, in one namespace or all."""

    def __init__(self, conn: Connection) -> None:
        try:
            api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=conn.kubeconfig, context=conn.context
            )
        except (config.ConfigException, OSError) as exc:
            raise PluginError(f"cannot load kubeconfig: {exc}") from exc
        self.custom = client.CustomObjectsApi(api)
        self.namespace = conn.namespace or _context_namespace(conn)

    def create(self, plural: str, body: Obj, dry_run: bool = False) -> Obj:
        """Create one object in the namespace (``dry_run``: the API server only validates)."""
        extra = {"dry_run": "All"} if dry_run else {}
        return cast(
            Obj,
            _call(
                self.custom.create_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                plural,
                body,
                **extra,
            ),
        )

    def get(self, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        """One object, or None when there is none of that name."""
        try:
            return cast(
                Obj,
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace or self.namespace, plural, name
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise PluginError(_api_message(exc)) from exc
        except _UNREACHABLE as exc:
            raise PluginError(f"cannot reach the API server: {exc}") from exc

    def list(self, plural: str, all_namespaces: bool = False, selector: str = "") -> list[Obj]:
        """Objects of one kind, in the namespace or in every namespace."""
        if all_namespaces:
            result = _call(
                self.custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                plural,
                label_selector=selector,
            )
        else:
            result = _call(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                plural,
                label_selector=selector,
            )
        return list(cast(Obj, result).get("items") or [])


def _call(method: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return method(*args, **kwargs)
    except ApiException as exc:
        raise PluginError(_api_message(exc)) from exc
    except _UNREACHABLE as exc:
        raise PluginError(f"cannot reach the API server: {exc}") from exc


def _api_message(exc: ApiException) -> str:
    """The API server's own message (a CEL rule's text, for one), as kubectl prints it."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return f"Error from server ({exc.reason}): {message or exc.body or exc.status}"
