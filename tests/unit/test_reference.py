"""Image reference parsing, checked against distribution's own test vectors."""

from __future__ import annotations

import re
import time

import pytest

from imageops.models.common import IMAGE_REF, ErrorReason, PullPolicy
from imageops.services.errors import OperationError, classify_message
from imageops.services.reference import (
    ImageRef,
    default_pull_policy,
    parse_reference,
    registry_allowed,
    registry_key_candidates,
)

SHA = "sha256:" + "f" * 64
SHA512 = "sha512:" + "f" * 128

# (input, registry, repository, tag, digest, familiar name)
VALID: list[tuple[str, str, str, str | None, str | None, str]] = [
    ("busybox", "docker.io", "library/busybox", None, None, "busybox"),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, "busybox"),
    ("library/busybox", "docker.io", "library/busybox", None, None, "busybox"),
    ("docker.io/busybox", "docker.io", "library/busybox", None, None, "busybox"),
    ("docker.io/library/busybox", "docker.io", "library/busybox", None, None, "busybox"),
    ("index.docker.io/busybox", "docker.io", "library/busybox", None, None, "busybox"),
    ("user/app:v1", "docker.io", "user/app", "v1", None, "user/app"),
    ("docker.io/library/foo/bar", "docker.io", "library/foo/bar", None, None, "library/foo/bar"),
    ("localhost/foo", "localhost", "foo", None, None, "localhost/foo"),
    ("localhost:5000/foo:1", "localhost:5000", "foo", "1", None, "localhost:5000/foo"),
    # Without a '/', "host:5000" is a name and a tag, as in docker.
    ("localhost:5000", "docker.io", "library/localhost", "5000", None, "localhost"),
    ("test.com:5000", "docker.io", "library/test.com", "5000", None, "test.com"),
    ("test_com", "docker.io", "library/test_com", None, None, "test_com"),
    ("foo_bar.com:8080", "docker.io", "library/foo_bar.com", "8080", None, "foo_bar.com"),
    ("foo/foo_bar.com:8080", "docker.io", "foo/foo_bar.com", "8080", None, "foo/foo_bar.com"),
    ("test:5000/repo", "test:5000", "repo", None, None, "test:5000/repo"),
    ("test:5000/repo:tag", "test:5000", "repo", "tag", None, "test:5000/repo"),
    (f"test:5000/repo@{SHA}", "test:5000", "repo", None, SHA, "test:5000/repo"),
    (f"test:5000/repo:tag@{SHA}", "test:5000", "repo", "tag", SHA, "test:5000/repo"),
    (f"repo@{SHA}", "docker.io", "library/repo", None, SHA, "repo"),
    ("127.0.0.1:5000/x:1", "127.0.0.1:5000", "x", "1", None, "127.0.0.1:5000/x"),
    (
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        "sub-dom1.foo.com",
        "bar/baz/quux",
        "some-long-tag",
        None,
        "sub-dom1.foo.com/bar/baz/quux",
    ),
    (
        "b.gcr.io/test.example.com/my-app:test.example.com",
        "b.gcr.io",
        "test.example.com/my-app",
        "test.example.com",
        None,
        "b.gcr.io/test.example.com/my-app",
    ),
    (
        f"xn--7o8h.com/myimage:xn--7o8h.com@{SHA512}",
        "xn--7o8h.com",
        "myimage",
        "xn--7o8h.com",
        SHA512,
        "xn--7o8h.com/myimage",
    ),
    ("lowercase:Uppercase", "docker.io", "library/lowercase", "Uppercase", None, "lowercase"),
    (
        "Registry.Example.com/app",
        "Registry.Example.com",
        "app",
        None,
        None,
        "Registry.Example.com/app",
    ),
    ("[2001:db8::1]/repo", "[2001:db8::1]", "repo", None, None, "[2001:db8::1]/repo"),
    (
        "[2001:db8::1]:5000/repo:t",
        "[2001:db8::1]:5000",
        "repo",
        "t",
        None,
        "[2001:db8::1]:5000/repo",
    ),
    ("a__b/c--d/e.f_g:_t", "docker.io", "a__b/c--d/e.f_g", "_t", None, "a__b/c--d/e.f_g"),
    # Algorithms go-digest does not know pass on the grammar alone.
    ("x@blake3:" + "a" * 32, "docker.io", "library/x", None, "blake3:" + "a" * 32, "x"),
]


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest", "name"), VALID)
def test_valid(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None, name: str
) -> None:
    ref = parse_reference(text)
    assert ref == ImageRef(registry, repository, tag, digest)
    assert ref.name == name
    assert ref.is_digest is (digest is not None)
    # The familiar string parses back to the same reference.
    assert parse_reference(str(ref)) == ref


INVALID: list[str] = [
    "",
    ":justtag",
    f"@{SHA}",
    "busybox:",
    "busybox@",
    f"busybox@{SHA}@{SHA}",
    "aa/asdf$$^/aa",
    "a//b",
    "a/",
    "/a",
    "-a",
    "a-",
    "a..b",
    "a___b",
    "busy box",
    " busybox",
    "busybox\n",
    "busybox:-tag",
    "busybox:.tag",
    "busybox:" + "t" * 129,
    "busybox:tä",
    "a:b:c",
    "host:/repo",
    "host:port/repo",
    "-bad.example.com/repo",
    "bad-.example.com/repo",
    "[2001:db8::1]",
    "busybox@sha256:" + "f" * 63,
    "busybox@sha256:" + "F" * 64,
    "busybox@sha512:" + "f" * 64,
    "busybox@sha256:abc",
    "busybox@1sha:" + "f" * 64,
    "f" * 64,
    "a/" * 128 + "a:tag",
    # 255 characters as written, but docker.io/ makes it longer than distribution allows.
    "a/" * 127 + "a:tag-puts-this-over-max",
    "ünicode/app",
]


@pytest.mark.parametrize("text", INVALID)
def test_invalid(text: str) -> None:
    with pytest.raises(OperationError) as caught:
        parse_reference(text)
    assert caught.value.reason is ErrorReason.INVALID_REFERENCE
    assert caught.value.message.startswith("invalid reference format")
    # The message classifies back to the same reason (e.g. when it comes through a CLI).
    assert classify_message(caught.value.message) is ErrorReason.INVALID_REFERENCE


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("Foo", "'foo'"),
        ("Uppercase:tag", "'uppercase'"),
        ("Uppercase/lowercase:tag", "'uppercase/lowercase'"),
        ("docker.io/Foo", "'foo'"),
        ("test:5000/Uppercase/lowercase:tag", "'test:5000/uppercase/lowercase'"),
        ("127.0.0.1:5000/Foo", "'127.0.0.1:5000/foo'"),
    ],
)
def test_uppercase_repository_gets_a_hint(text: str, hint: str) -> None:
    with pytest.raises(OperationError) as caught:
        parse_reference(text)
    assert "must be lowercase" in caught.value.message
    assert f"did you mean {hint}" in caught.value.message


def test_longest_name_is_accepted() -> None:
    repository = "a/" * 122 + "a"  # docker.io/ + 245 = 255 characters
    ref = parse_reference(f"docker.io/{repository}")
    assert len(f"{ref.registry}/{ref.repository}") == 255


@pytest.mark.parametrize("text", ["a" * 100_000 + "!", "a-" * 50_000 + "!", "a." * 5000 + "A"])
def test_pathological_input_fails_fast(text: str) -> None:
    started = time.monotonic()
    with pytest.raises(OperationError):
        parse_reference(text)
    assert time.monotonic() - started < 1.0


def test_str_is_the_familiar_full_reference() -> None:
    assert str(parse_reference("docker.io/library/busybox:1")) == "busybox:1"
    assert str(parse_reference(f"h:5000/a/b:t@{SHA}")) == f"h:5000/a/b:t@{SHA}"
    assert str(parse_reference(f"busybox@{SHA}")) == f"busybox@{SHA}"
    assert str(parse_reference("busybox")) == "busybox"


def test_repo_tag() -> None:
    assert parse_reference("busybox").repo_tag == "busybox:latest"
    assert parse_reference("h:5000/x:1").repo_tag == "h:5000/x:1"
    assert parse_reference(f"x:1@{SHA}").repo_tag == "x:1"
    assert parse_reference(f"x@{SHA}").repo_tag == f"x@{SHA}"


def test_with_tag() -> None:
    ref = parse_reference("h:5000/x:1")
    assert ref.with_tag("2") == ImageRef("h:5000", "x", "2", None)
    assert ref.tag == "1"  # frozen: with_tag returns a new reference
    # As distribution's WithTag: a digest stays.
    assert parse_reference(f"x@{SHA}").with_tag("v") == ImageRef("docker.io", "library/x", "v", SHA)
    with pytest.raises(OperationError) as caught:
        ref.with_tag("-bad")
    assert caught.value.reason is ErrorReason.INVALID_REFERENCE


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("busybox", PullPolicy.ALWAYS),
        ("busybox:latest", PullPolicy.ALWAYS),
        (f"busybox:latest@{SHA}", PullPolicy.ALWAYS),
        ("busybox:1", PullPolicy.IF_NOT_PRESENT),
        ("busybox:Latest", PullPolicy.IF_NOT_PRESENT),
        (f"busybox@{SHA}", PullPolicy.IF_NOT_PRESENT),
        (f"busybox:1@{SHA}", PullPolicy.IF_NOT_PRESENT),
    ],
)
def test_default_pull_policy(text: str, policy: PullPolicy) -> None:
    assert default_pull_policy(parse_reference(text)) is policy


@pytest.mark.parametrize(
    ("text", "allowed", "expected"),
    [
        ("busybox", [], True),
        ("busybox", ["", "  "], True),
        ("busybox", ["docker.io"], True),
        ("busybox", ["DOCKER.IO"], True),
        ("busybox", ["index.docker.io"], True),
        ("busybox", ["registry-1.docker.io"], True),
        ("busybox", ["*.docker.io"], True),
        ("busybox", ["127.0.0.1:5000"], False),
        ("index.docker.io/x/y", ["docker.io"], True),
        ("127.0.0.1:5000/x", ["127.0.0.1:5000"], True),
        ("127.0.0.1:5000/x", ["127.0.0.1"], False),
        ("127.0.0.1:5000/x", ["127.0.0.1:5001"], False),
        ("127.0.0.1:5000/x", ["docker.io", "127.0.0.1:5000"], True),
        ("Reg.Example.com/x", ["reg.example.COM"], True),
        ("reg.example.com/x", ["https://reg.example.com/"], True),
        ("reg.example.com/x", ["*.example.com"], True),
        ("a.b.example.com/x", ["*.example.com"], True),
        ("example.com/x", ["*.example.com"], False),
        ("badexample.com/x", ["*.example.com"], False),
        ("reg.example.com:5000/x", ["*.example.com"], False),
        ("reg.example.com:5000/x", ["*.example.com:5000"], True),
        ("reg.example.com/x", ["*.example.com:5000"], False),
        ("[::1]:5000/x", ["[::1]:5000"], True),
        ("[::1]/x", ["[::1]:5000"], False),
        ("localhost/x", ["docker.io"], False),
    ],
)
def test_registry_allowed(text: str, allowed: list[str], expected: bool) -> None:
    assert registry_allowed(parse_reference(text), allowed) is expected


def test_registry_key_candidates_plain_host() -> None:
    assert registry_key_candidates("127.0.0.1:5000") == [
        "127.0.0.1:5000",
        "https://127.0.0.1:5000",
        "http://127.0.0.1:5000",
        "https://127.0.0.1:5000/v1/",
    ]


@pytest.mark.parametrize("registry", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_registry_key_candidates_docker_hub(registry: str) -> None:
    keys = registry_key_candidates(registry)
    assert keys[0] == "https://index.docker.io/v1/"
    for key in ("index.docker.io", "docker.io", "registry-1.docker.io", f"https://{registry}"):
        assert key in keys
    assert len(keys) == len(set(keys))


def test_image_ids_are_recognised() -> None:
    from imageops.services.reference import is_image_id

    assert is_image_id("sha256:" + "a" * 64)
    assert not is_image_id("sha256:" + "a" * 63)
    assert not is_image_id("busybox:latest")


# The CRD's pattern (models.common.IMAGE_REF, RE2 on the API server) accepts what
# the parser accepts; it may let through what only lengths and digest sizes reject,
# which the agent still reports as InvalidReference.
_LENGTH_OR_DIGEST_SIZE_ONLY = {
    "busybox@sha256:" + "f" * 63,
    "busybox@sha256:" + "F" * 64,
    "busybox@sha512:" + "f" * 64,
    "f" * 64,
    "a/" * 128 + "a:tag",
    "a/" * 127 + "a:tag-puts-this-over-max",
}


@pytest.mark.parametrize("text", [v[0] for v in VALID])
def test_crd_pattern_accepts_every_valid_reference(text: str) -> None:
    assert re.fullmatch(IMAGE_REF, text), text


@pytest.mark.parametrize("text", [t for t in INVALID if t not in _LENGTH_OR_DIGEST_SIZE_ONLY])
def test_crd_pattern_rejects_what_the_grammar_rejects(text: str) -> None:
    assert re.fullmatch(IMAGE_REF, text) is None, text


@pytest.mark.parametrize("text", ["UPPER/Case::bad", "Foo", "app/Upper:1", "host:port/repo"])
def test_crd_pattern_rejects_at_admission_what_failed_later(text: str) -> None:
    assert re.fullmatch(IMAGE_REF, text) is None
    with pytest.raises(OperationError):
        parse_reference(text)


def test_image_ids_match_the_crd_pattern() -> None:
    assert re.fullmatch(IMAGE_REF, SHA)  # as name:tag; rollbacks tag image IDs back
