"""Registry credentials from ``kubernetes.io/dockerconfigjson`` Secrets.

Every failure is ``OperationError(CredentialsNotFound)`` whose message names
the Secret, the registry and the keys present, and never a secret value:
messages end up in status.lastError and Events, which many people can read.
For the same reason decoding errors are raised ``from None``, so no
traceback carries the undecodable bytes along.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from imageops.models.common import ErrorReason
from imageops.services.backend import RegistryAuth
from imageops.services.errors import OperationError
from imageops.services.reference import DOCKER_HUB_HOSTS, registry_key_candidates

DOCKERCONFIGJSON_TYPE = "kubernetes.io/dockerconfigjson"
DOCKERCONFIGJSON_KEY = ".dockerconfigjson"
_MAX_KEYS_SHOWN = 20


def auth_from_secret_data(
    secret_type: str | None, data: Mapping[str, str], registry: str, secret_name: str
) -> RegistryAuth:
    """Credentials for ``registry`` from a Secret's type and base64 ``.data``."""
    where = f"Secret {secret_name!r}"
    if secret_type != DOCKERCONFIGJSON_TYPE:
        raise _not_found(
            f"{where} has type {secret_type or '(none)'!r}; credentials must be a Secret of "
            f"type {DOCKERCONFIGJSON_TYPE} with the key {DOCKERCONFIGJSON_KEY}"
        )
    encoded = data.get(DOCKERCONFIGJSON_KEY)
    if not encoded:
        raise _not_found(
            f"{where} has no (or an empty) {DOCKERCONFIGJSON_KEY} key (keys present: {_keys(data)})"
        )
    document = _decode_base64(encoded)
    if document is None:
        raise _not_found(f"{where}: {DOCKERCONFIGJSON_KEY} is not valid base64-encoded UTF-8")
    try:
        config = json.loads(document)
    except json.JSONDecodeError as exc:
        # exc.msg and the position only: exc.doc is the whole secret document.
        raise _not_found(
            f"{where}: {DOCKERCONFIGJSON_KEY} is not valid JSON "
            f"({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    return _auth_from_config(config, registry, where)


def auth_from_dockerconfig(config: Mapping[str, Any], registry: str) -> RegistryAuth:
    """Credentials for ``registry`` from a parsed ``.dockerconfigjson`` document."""
    return _auth_from_config(config, registry, "the docker config")


def _auth_from_config(config: object, registry: str, where: str) -> RegistryAuth:
    auths = config.get("auths") if isinstance(config, Mapping) else None
    if not isinstance(auths, Mapping):
        raise _not_found(f'{where} has no "auths" object (expected {{"auths": {{registry: ...}}}})')
    key = _find_key(auths, registry)
    if key is None:
        raise _not_found(
            f"{where} has no credentials for registry {registry!r} "
            f"(auths entries present: {_keys(auths)})"
        )
    username, password = _decode_entry(auths[key], f'{where}, auths entry "{key}"')
    return RegistryAuth(username=username, password=password, registry=registry)


def _find_key(auths: Mapping[Any, Any], registry: str) -> str | None:
    """The auths key for ``registry``: a known spelling first, then any URL naming the host."""
    by_lower = {key.lower(): key for key in auths if isinstance(key, str)}
    for candidate in registry_key_candidates(registry):
        if candidate.lower() in by_lower:
            return by_lower[candidate.lower()]
    # docker itself reduces every key to its host name (ConvertToHostname) before comparing.
    wanted = _same_registry(registry)
    for lower, key in by_lower.items():
        if _same_registry(_hostname(lower)) == wanted:
            return key
    return None


def _hostname(key: str) -> str:
    """``https://host:5000/v1/`` → ``host:5000``."""
    for scheme in ("https://", "http://"):
        key = key.removeprefix(scheme)
    return key.split("/", 1)[0]


def _same_registry(host: str) -> str:
    """A comparison key: lower case, with every Docker Hub host folded into one."""
    host = host.strip().lower()
    return DOCKER_HUB_HOSTS[0] if host in DOCKER_HUB_HOSTS else host


def _decode_entry(entry: object, where: str) -> tuple[str, str]:
    """(username, password) of one auths entry; ``auth`` wins over the separate fields."""
    if not isinstance(entry, Mapping):
        raise _not_found(f"{where} is not an object")
    auth = entry.get("auth")
    if auth:
        if not isinstance(auth, str):
            raise _not_found(f'{where}: "auth" is not a string')
        decoded = _decode_base64(auth)
        if decoded is None:
            raise _not_found(f'{where}: "auth" is not valid base64-encoded UTF-8')
        username, colon, password = decoded.partition(":")
        if not colon:
            raise _not_found(f'{where}: "auth" does not decode to "username:password"')
    else:
        fields = entry.get("username"), entry.get("password")
        if not isinstance(fields[0], str) or not isinstance(fields[1], str):
            hint = " (identity tokens are not supported)" if "identitytoken" in entry else ""
            raise _not_found(
                f'{where} has neither "auth" nor string "username" and "password"{hint} '
                f"(fields present: {_keys(entry)})"
            )
        username, password = fields[0], fields[1]
    if not username or not password:
        raise _not_found(f"{where} has an empty username or password")
    return username, password


def _decode_base64(text: str) -> str | None:
    """Standard base64 (padding optional, surrounding whitespace ignored) as UTF-8, or None."""
    text = text.strip()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _keys(mapping: Mapping[Any, Any]) -> str:
    """The keys of a mapping for a message (keys name registries or fields, never secrets)."""
    shown = sorted(str(key) for key in mapping)[:_MAX_KEYS_SHOWN]
    more = len(mapping) - len(shown)
    text = ", ".join(repr(key) for key in shown) or "none"
    return f"{text}, and {more} more" if more > 0 else text


def _not_found(message: str) -> OperationError:
    return OperationError(ErrorReason.CREDENTIALS_NOT_FOUND, message)
