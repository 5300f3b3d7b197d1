"""Credentials from dockerconfigjson documents and Secrets, and that no secret leaks."""

from __future__ import annotations

import base64
import json
import traceback
from typing import Any

import pytest

from imageops.models.common import ErrorReason
from imageops.services.credentials import auth_from_dockerconfig, auth_from_secret_data
from imageops.services.errors import OperationError

USER = "robot"
PASSWORD = "s3cr3t:with-colon-Pw"
REG = "127.0.0.1:5000"
SECRET_TYPE = "kubernetes.io/dockerconfigjson"


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def config(key: str = REG, **entry: Any) -> dict[str, Any]:
    return {"auths": {key: entry or {"auth": b64(f"{USER}:{PASSWORD}")}}}


def secret_data(document: dict[str, Any] | str) -> dict[str, str]:
    text = document if isinstance(document, str) else json.dumps(document)
    return {".dockerconfigjson": b64(text)}


def assert_no_secret(error: OperationError) -> None:
    """Neither the password, nor its base64, nor the username in any form of the error."""
    shown = [str(error), repr(error), error.message, error.to_info().model_dump_json()]
    shown.append("".join(traceback.format_exception(error)))
    for text in shown:
        for secret in (PASSWORD, b64(f"{USER}:{PASSWORD}"), b64(PASSWORD), "s3cr3t"):
            assert secret not in text


def test_auth_field() -> None:
    auth = auth_from_dockerconfig(config(), REG)
    assert (auth.username, auth.password, auth.registry) == (USER, PASSWORD, REG)


def test_username_password_fields() -> None:
    auth = auth_from_dockerconfig(config(username=USER, password=PASSWORD), REG)
    assert (auth.username, auth.password) == (USER, PASSWORD)


def test_auth_field_wins_over_separate_fields() -> None:
    document = config(auth=b64(f"{USER}:{PASSWORD}"), username="other", password="other")
    assert auth_from_dockerconfig(document, REG).username == USER


def test_unpadded_base64_and_extra_entry_fields() -> None:
    unpadded = b64(f"{USER}:{PASSWORD}xy").rstrip("=")
    assert unpadded != b64(f"{USER}:{PASSWORD}xy")
    auth = auth_from_dockerconfig(config(auth=unpadded, email="a@b.c"), REG)
    assert auth.password == PASSWORD + "xy"


def test_repr_hides_the_password() -> None:
    assert PASSWORD not in repr(auth_from_dockerconfig(config(), REG))


@pytest.mark.parametrize(
    ("key", "registry"),
    [
        (REG, REG),
        (f"https://{REG}", REG),
        (f"http://{REG}", REG),
        (f"https://{REG}/v1/", REG),
        (f"https://{REG}/v2/", REG),
        ("HTTPS://Reg.Example.COM", "reg.example.com"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("https://registry-1.docker.io/v2/", "docker.io"),
        ("https://index.docker.io/v1/", "index.docker.io"),
    ],
)
def test_key_spellings(key: str, registry: str) -> None:
    auth = auth_from_dockerconfig(config(key), registry)
    assert (auth.username, auth.password, auth.registry) == (USER, PASSWORD, registry)


def test_exact_key_preferred_over_other_spelling() -> None:
    document = {
        "auths": {
            f"https://{REG}/v2/": {"username": "fallback", "password": "x"},
            REG: {"username": USER, "password": PASSWORD},
        }
    }
    assert auth_from_dockerconfig(document, REG).username == USER


@pytest.mark.parametrize(
    ("key", "registry"),
    [
        ("127.0.0.1:5001", REG),
        ("127.0.0.1", REG),
        (f"{REG}.evil.example", REG),
        ("docker.io", REG),
        (REG, "docker.io"),
    ],
)
def test_other_registries_do_not_match(key: str, registry: str) -> None:
    with pytest.raises(OperationError) as caught:
        auth_from_dockerconfig(config(key), registry)
    error = caught.value
    assert error.reason is ErrorReason.CREDENTIALS_NOT_FOUND
    assert repr(registry) in error.message
    assert repr(key) in error.message  # the entries present, by key
    assert_no_secret(error)


BAD_DOCUMENTS: list[tuple[Any, str]] = [
    ({}, '"auths"'),
    ({"auths": []}, '"auths"'),
    ([], '"auths"'),
    (config(auth="!!!not base64!!!"), "base64"),
    (config(auth=b64(b"\xff\xfe" + PASSWORD.encode())), "base64"),
    (config(auth=b64(f"{USER}{PASSWORD}".replace(":", ""))), "username:password"),
    (config(auth=b64(f":{PASSWORD}")), "empty username or password"),
    (config(auth=b64(f"{USER}:")), "empty username or password"),
    (config(auth=12345), "not a string"),
    ({"auths": {REG: "string"}}, "not an object"),
    (config(username=USER), '"username" and "password"'),
    (config(password=PASSWORD), '"username" and "password"'),
    (config(identitytoken=PASSWORD), "identity tokens"),
    (config(username=USER, password=123), '"username" and "password"'),
]


@pytest.mark.parametrize(("document", "expected"), BAD_DOCUMENTS)
def test_malformed_documents(document: Any, expected: str) -> None:
    with pytest.raises(OperationError) as caught:
        auth_from_dockerconfig(document, REG)
    assert caught.value.reason is ErrorReason.CREDENTIALS_NOT_FOUND
    assert expected in caught.value.message
    assert_no_secret(caught.value)


def test_secret_data() -> None:
    auth = auth_from_secret_data(SECRET_TYPE, secret_data(config()), REG, "regcred")
    assert (auth.username, auth.password, auth.registry) == (USER, PASSWORD, REG)


@pytest.mark.parametrize("secret_type", [None, "Opaque", "kubernetes.io/dockercfg"])
def test_secret_of_wrong_type(secret_type: str | None) -> None:
    with pytest.raises(OperationError) as caught:
        auth_from_secret_data(secret_type, secret_data(config()), REG, "regcred")
    error = caught.value
    assert error.reason is ErrorReason.CREDENTIALS_NOT_FOUND
    assert "'regcred'" in error.message
    assert "type" in error.message
    assert SECRET_TYPE in error.message
    assert_no_secret(error)


def test_secret_without_the_key_lists_its_keys() -> None:
    data = {"username": b64(USER), "password": b64(PASSWORD)}
    with pytest.raises(OperationError) as caught:
        auth_from_secret_data(SECRET_TYPE, data, REG, "regcred")
    error = caught.value
    assert ".dockerconfigjson" in error.message
    assert "'password'" in error.message and "'username'" in error.message
    assert_no_secret(error)


def test_secret_without_an_entry_names_registry_secret_and_entries() -> None:
    data = secret_data(config("https://index.docker.io/v1/"))
    with pytest.raises(OperationError) as caught:
        auth_from_secret_data(SECRET_TYPE, data, REG, "regcred")
    error = caught.value
    assert error.reason is ErrorReason.CREDENTIALS_NOT_FOUND
    for part in ("'regcred'", repr(REG), "'https://index.docker.io/v1/'"):
        assert part in error.message
    assert_no_secret(error)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({".dockerconfigjson": "%%%"}, "base64"),
        ({".dockerconfigjson": b64(b"\xff" + PASSWORD.encode())}, "base64"),
        (secret_data('{"auths": {"' + REG + '": {"auth": "' + PASSWORD + '"'), "not valid JSON"),
        (secret_data(PASSWORD), "not valid JSON"),
        (secret_data("[1, 2]"), '"auths"'),
        ({".dockerconfigjson": ""}, "no (or an empty) .dockerconfigjson key"),
    ],
)
def test_malformed_secret_data(data: dict[str, str], expected: str) -> None:
    with pytest.raises(OperationError) as caught:
        auth_from_secret_data(SECRET_TYPE, data, REG, "regcred")
    assert caught.value.reason is ErrorReason.CREDENTIALS_NOT_FOUND
    assert expected in caught.value.message
    assert caught.value.__cause__ is None
    assert_no_secret(caught.value)


def test_many_entries_are_cut_in_the_message() -> None:
    document = {"auths": {f"r{i}.example": {"auth": b64("u:p")} for i in range(50)}}
    with pytest.raises(OperationError) as caught:
        auth_from_dockerconfig(document, REG)
    assert "and 30 more" in caught.value.message
