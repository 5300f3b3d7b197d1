"""A small blocking client of the Kubernetes API: JSON in, JSON out, one connection pool.

The official ``kubernetes`` client costs an agent ~20 MiB of generated models
it never needs (the operator reads and writes plain JSON objects) and a model
round-trip per call. This client logs in the way kopf does (the pod's service
account, else the kubeconfig's current context), and when that is not enough
(an exec or auth-provider plugin) takes the credentials from the official
client, imported only then.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

log = logging.getLogger(__name__)
# Connect and read timeouts of the operator's own calls: a hung API server (etcd down)
# must fail a call in bounded time so that it is retried, never wait for ever.
REQUEST_TIMEOUT = (5.0, 30.0)
JSON = "application/json"


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"({status}) {reason}: {body[:500]}")
        self.status = status
        self.reason = reason
        self.body = body


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are."""

    server: str
    ca_pem: str | None = None  # PEM text of the CA bundle; None: the system's
    insecure: bool = False
    token: str | None = None
    username: str | None = None
    password: str | None = None
    cert_file: str | None = None  # client certificate and key (files)
    key_file: str | None = None


def _read(path: Any) -> str:
    return Path(path).read_text()


def _pem(data: Any) -> str:
    """Kubeconfig ``*-data`` fields are base64 of PEM."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return base64.b64decode(raw).decode()


def _file_of(text: str) -> str:
    # ssl loads client certificates only from files.
    handle = tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False)  # noqa: SIM115
    with handle:
        handle.write(text)
    return handle.name


def _from_kopf(info: Any) -> Credentials:
    """Credentials from a kopf ``ConnectionInfo``."""
    ca = _read(info.ca_path) if info.ca_path else _pem(info.ca_data) if info.ca_data else None
    cert = info.certificate_path or (
        _file_of(_pem(info.certificate_data)) if info.certificate_data else None
    )
    key = info.private_key_path or (
        _file_of(_pem(info.private_key_data)) if info.private_key_data else None
    )
    return Credentials(
        server=str(info.server).rstrip("/"),
        ca_pem=ca,
        insecure=bool(info.insecure),
        token=info.token,
        username=info.username,
        password=info.password,
        cert_file=str(cert) if cert else None,
        key_file=str(key) if key else None,
    )


def kopf_login(**kwargs: Any) -> Any:
    """kopf's login: its own (service account, else kubeconfig), else the official client's.

    kopf's own readers keep the official client out of the process; its loaders
    are needed only when those find no credentials (exec plugins and the like).
    """
    import kopf

    info = kopf.login_with_service_account(**kwargs)
    if info is not None:
        info = _service_address(info)
    info = info or kopf.login_with_kubeconfig(**kwargs)
    if info is not None and (info.token or info.certificate_path or info.certificate_data):
        return info
    return kopf.login_via_client(**kwargs)


def _service_address(info: Any) -> Any:
    """The API server at KUBERNETES_SERVICE_HOST/PORT, as the official client finds it.

    kopf's service-account login names https://kubernetes.default.svc, which only
    cluster DNS resolves: a hostNetwork pod without it (the agent's DaemonSet on a
    node whose kubelet has no cluster DNS) must use the address the kubelet injects.
    """
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    if not host or not port:
        return info
    host = f"[{host}]" if ":" in host else host
    return dataclasses.replace(info, server=f"https://{host}:{port}")


def login() -> Credentials:
    """Credentials as kopf's login finds them (see :func:`kopf_login`)."""
    import kopf

    info = kopf_login(settings=kopf.OperatorSettings(), logger=log)
    if info is None:
        raise kopf.LoginError("no Kubernetes credentials: neither in-cluster nor a kubeconfig")
    return _from_kopf(info)


class KubeHttp:
    """Blocking JSON requests to the API server; thread-safe (one pool for every thread)."""

    def __init__(self, credentials: Credentials | None = None, maxsize: int = 16) -> None:
        self._lock = threading.Lock()
        self._maxsize = maxsize
        self._creds = credentials or login()
        self._pool = self._new_pool(self._creds)

    def _new_pool(self, creds: Credentials) -> urllib3.PoolManager:
        context = ssl.create_default_context(cadata=creds.ca_pem)
        if creds.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if creds.cert_file:
            context.load_cert_chain(creds.cert_file, creds.key_file)
        # One quick retry of a failed connection at most: our own loops retry (with
        # backoff, for ever where it matters); read failures are never retried here.
        retries = urllib3.Retry(total=1, read=0, redirect=0, status=0, raise_on_status=False)
        return urllib3.PoolManager(maxsize=self._maxsize, ssl_context=context, retries=retries)

    def _headers(self, content_type: str, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, "Content-Type": content_type, "User-Agent": "imageops"}
        creds = self._creds
        if creds.token:
            headers["Authorization"] = f"Bearer {creds.token}"
        elif creds.username and creds.password:
            headers |= urllib3.make_headers(basic_auth=f"{creds.username}:{creds.password}")
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = JSON,
        query: dict[str, Any] | None = None,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
        accept: str = JSON,
    ) -> Any:
        """One call; the decoded JSON answer (None when empty). Raises ApiError on >= 400."""
        url = self._creds.server + path + _query(query)
        data = None if body is None else json.dumps(body).encode()
        limits = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        for relogin in (True, False):
            response = self._pool.request(
                method, url, body=data, headers=self._headers(content_type, accept), timeout=limits
            )
            if response.status == 401 and relogin:
                # A rotated service-account token (or an expired one): log in again, once.
                self._relogin()
                continue
            if response.status >= 400:
                raise ApiError(response.status, response.reason or "", response.data.decode())
            return json.loads(response.data) if response.data else None
        raise AssertionError("unreachable")

    def _relogin(self) -> None:
        with self._lock:
            self._creds = login()
            self._pool = self._new_pool(self._creds)


def _query(query: dict[str, Any] | None) -> str:
    items = {k: v for k, v in (query or {}).items() if v is not None}
    return "?" + urlencode(items) if items else ""
