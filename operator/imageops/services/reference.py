"""Docker image references, parsed as the docker CLI and distribution parse them.

The grammar is distribution's ``reference`` package (the one dockerd uses),
with its normalisation: a name without a registry lives on Docker Hub
(``docker.io``), and a one-component Docker Hub name is an official image
under ``library/``. Everything else here (pull policy, registry allow-list,
dockerconfigjson keys) is decided on the parsed form, never on raw strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from imageops.models.common import ErrorReason, PullPolicy
from imageops.services.errors import OperationError

DEFAULT_REGISTRY = "docker.io"
# Older clients wrote Docker Hub as index.docker.io; distribution folds it into docker.io.
LEGACY_DEFAULT_REGISTRY = "index.docker.io"
OFFICIAL_NAMESPACE = "library"
DOCKER_HUB_HOSTS: tuple[str, ...] = ("docker.io", "index.docker.io", "registry-1.docker.io")
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
NAME_TOTAL_LENGTH_MAX = 255
DEFAULT_TAG = "latest"

# distribution/reference/regexp.go. The path separator is written ``-+``
# rather than 2.8's ``-*``: the language is the same, but ``-*`` lets
# Python's backtracking engine go exponential on a long invalid name.
_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN_RE = re.compile(rf"{_HOST}(?::[0-9]+)?")
_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
# Go's \w is ASCII-only; Python's is Unicode, hence the explicit class.
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_LOWER_HEX_RE = re.compile(r"[a-f0-9]+")
# go-digest's registered algorithms: their encoded part is exact-length lower-case hex.
# Other algorithms pass on the grammar alone, as the brief for this module asks.
_KNOWN_DIGEST_LENGTHS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference; build it with :func:`parse_reference`, which validates."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Registry and repository as docker writes them (``busybox``, ``host:5000/repo``)."""
        if self.registry != DEFAULT_REGISTRY:
            return f"{self.registry}/{self.repository}"
        namespace, _, rest = self.repository.partition("/")
        if namespace == OFFICIAL_NAMESPACE and rest and "/" not in rest:
            return rest
        return self.repository

    @property
    def is_digest(self) -> bool:
        """Whether the reference pins content by digest."""
        return self.digest is not None

    @property
    def repo_tag(self) -> str:
        """``name:tag``, tag ``latest`` when neither is given; ``name@digest`` when digest-only."""
        if self.tag is not None:
            return f"{self.name}:{self.tag}"
        if self.digest is not None:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{DEFAULT_TAG}"

    def with_tag(self, tag: str) -> ImageRef:
        """The same repository with ``tag``; a digest is kept, as distribution's WithTag does."""
        if not _TAG_RE.fullmatch(tag):
            raise _invalid(tag, "a tag is 1-128 of [A-Za-z0-9_.-] and does not start with . or -")
        return replace(self, tag=tag)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def is_image_id(text: str) -> bool:
    """Whether ``text`` is a local image ID (``sha256:<64 hex>``), which names no registry.

    Rollbacks tag an image ID back onto a target; the ID never leaves the node.
    """
    algorithm, _, hexpart = text.partition(":")
    return algorithm == "sha256" and _IDENTIFIER_RE.fullmatch(hexpart) is not None


def parse_reference(text: str) -> ImageRef:
    """Parse ``[registry/]path[:tag][@digest]``; OperationError(InvalidReference) if invalid."""
    if not text:
        raise _invalid(text, "it is empty")
    if any(c.isspace() for c in text):
        raise _invalid(text, "it contains whitespace")
    if _IDENTIFIER_RE.fullmatch(text):
        raise _invalid(text, "a 64-character hexadecimal string is an image ID, not a name")
    remainder, digest = _split_digest(text)
    name, tag = _split_tag(text, remainder)
    registry, repository = _split_registry(name)
    _check_name(text, registry, repository)
    if tag is not None and not _TAG_RE.fullmatch(tag):
        raise _invalid(
            text, f"tag {tag!r} is not 1-128 of [A-Za-z0-9_.-] starting with [A-Za-z0-9_]"
        )
    if digest is not None:
        _check_digest(text, digest)
    return ImageRef(registry=registry, repository=repository, tag=tag, digest=digest)


def _split_digest(text: str) -> tuple[str, str | None]:
    """Split off ``@digest``; neither name nor tag may contain '@'."""
    remainder, at, digest = text.partition("@")
    if not at:
        return text, None
    if not remainder:
        raise _invalid(text, "the name before '@' is empty")
    if not digest or "@" in digest:
        raise _invalid(text, "expected exactly one digest after '@'")
    return remainder, digest


def _split_tag(text: str, remainder: str) -> tuple[str, str | None]:
    """Split off ``:tag``: a ':' after the last '/' (before it, ':' is a registry port)."""
    colon = remainder.rfind(":")
    if colon <= remainder.rfind("/"):
        return remainder, None
    name, tag = remainder[:colon], remainder[colon + 1 :]
    if not name:
        raise _invalid(text, "the name before ':' is empty")
    if not tag:
        raise _invalid(text, "the tag after ':' is empty")
    return name, tag


def _split_registry(name: str) -> tuple[str, str]:
    """distribution's splitDockerDomain: registry and repository, Docker Hub normalised."""
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DEFAULT_REGISTRY, name
    if registry == LEGACY_DEFAULT_REGISTRY:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"{OFFICIAL_NAMESPACE}/{repository}"
    return registry, repository


def _check_name(text: str, registry: str, repository: str) -> None:
    """Validate the registry host, the repository path and their total length."""
    length = len(registry) + 1 + len(repository)
    if length > NAME_TOTAL_LENGTH_MAX:
        raise _invalid(
            text,
            f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters "
            f"(it has {length} as {registry}/...)",
        )
    if repository.lower() != repository and _PATH_RE.fullmatch(repository.lower()):
        raise OperationError(
            ErrorReason.INVALID_REFERENCE,
            f"invalid reference format: repository name ({repository}) must be lowercase "
            f"in {_quote(text)}; did you mean {ImageRef(registry, repository.lower()).name!r}?",
        )
    if not _DOMAIN_RE.fullmatch(registry):
        raise _invalid(
            text, f"registry {registry!r} is not a host name or [IPv6] with an optional :port"
        )
    if not _PATH_RE.fullmatch(repository):
        raise _invalid(
            text,
            f"repository {repository!r} must be '/'-separated components of "
            "lower-case letters and digits joined by '.', '_', '__' or '-'",
        )


def _check_digest(text: str, digest: str) -> None:
    """The digest grammar, and exact lower-case hex for the algorithms go-digest knows."""
    if not _DIGEST_RE.fullmatch(digest):
        raise _invalid(text, f"digest {digest!r} is not algorithm:hex (e.g. sha256:<64 hex>)")
    algorithm, _, encoded = digest.partition(":")
    length = _KNOWN_DIGEST_LENGTHS.get(algorithm)
    if length is not None and (len(encoded) != length or not _LOWER_HEX_RE.fullmatch(encoded)):
        raise _invalid(text, f"a {algorithm} digest has exactly {length} lower-case hex digits")


def _quote(text: str) -> str:
    """The input as shown in messages: quoted, and cut when absurdly long."""
    return repr(text if len(text) <= 300 else text[:300] + "...")


def _invalid(text: str, why: str) -> OperationError:
    """An InvalidReference error; the prefix matches docker's so classification agrees."""
    return OperationError(
        ErrorReason.INVALID_REFERENCE, f"invalid reference format: {_quote(text)}: {why}"
    )


def default_pull_policy(ref: ImageRef) -> PullPolicy:
    """Kubernetes' default: Always for ``:latest`` or an untagged name, else IfNotPresent."""
    if ref.tag == DEFAULT_TAG or (ref.tag is None and ref.digest is None):
        return PullPolicy.ALWAYS
    return PullPolicy.IF_NOT_PRESENT


def registry_allowed(ref: ImageRef, allowed: Sequence[str]) -> bool:
    """Whether ``ref``'s registry is in ``allowed`` (host[:port] or ``*.domain[:port]``).

    An empty list, or one holding only blank entries (what splitting an empty
    ``--allowed-registries=`` gives), allows every registry.
    """
    entries = [_normalize_host(entry) for entry in allowed]
    entries = [entry for entry in entries if entry]
    if not entries:
        return True
    hosts = _host_aliases(ref.registry)
    return any(_entry_matches(entry, hosts) for entry in entries)


def _normalize_host(value: str) -> str:
    """Lower-case host[:port], tolerating a scheme and a trailing path in allow-list entries."""
    host = value.strip().lower()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    return host.split("/", 1)[0]


def _host_aliases(registry: str) -> set[str]:
    """The names a registry answers to: all Docker Hub hosts are one registry."""
    host = registry.lower()
    return set(DOCKER_HUB_HOSTS) if host in DOCKER_HUB_HOSTS else {host}


def _split_port(host: str) -> tuple[str, str]:
    """``host:port`` → (host, port); port is '' when absent (an [IPv6] literal keeps its colons)."""
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit():
        return name, port
    return host, ""


def _entry_matches(entry: str, hosts: set[str]) -> bool:
    """One allow-list entry against a registry's names; a wildcard needs a subdomain."""
    if not entry.startswith("*."):
        return bool(_host_aliases(entry) & hosts)
    suffix, entry_port = _split_port(entry[1:])
    for host in hosts:
        name, port = _split_port(host)
        if port == entry_port and name.endswith(suffix) and len(name) > len(suffix):
            return True
    return False


def registry_key_candidates(registry: str) -> list[str]:
    """The ``auths`` keys a dockerconfigjson may use for ``registry``, most canonical first."""
    host = registry.strip()
    forms: list[str] = []
    if host.lower() in DOCKER_HUB_HOSTS:
        forms += [DOCKER_HUB_CONFIG_KEY, "index.docker.io", "docker.io", "registry-1.docker.io"]
    forms += [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"]
    return list(dict.fromkeys(forms))
