"""ImageBackend driving the ``docker`` command line.

Every command runs from an argument list (never a shell) with ``--`` before
the image references, so a reference can never be read as an option.
Credentials go to a private DOCKER_CONFIG directory (mode 0700) made for the
call and removed after it, never into argv or the environment; without
credentials the directory is empty, so the node's own docker login is not used.

With stdout not a terminal the command prints the daemon's progress items as
plain ``<layer>: <status>`` lines, which give layer counts (not bytes) and the
digest; errors come on stderr with a non-zero exit code.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence

from imageops.adapters.progress import (
    StreamReader,
    cancelled_error,
    parse_cli_line,
    push_target,
    repo_digest,
)
from imageops.adapters.registry_http import RegistryClient
from imageops.models.common import ErrorReason
from imageops.services.backend import (
    CancelToken,
    ImageInfo,
    ProgressCallback,
    PullResult,
    PushResult,
    RegistryAuth,
    require_image,
)
from imageops.services.errors import OperationError, classify_message, from_message
from imageops.services.reference import (
    DOCKER_HUB_CONFIG_KEY,
    DOCKER_HUB_HOSTS,
    parse_reference,
)


@contextlib.contextmanager
def docker_config(auth: RegistryAuth | None) -> Iterator[str]:
    """A private DOCKER_CONFIG directory holding only ``auth``; removed on exit."""
    directory = tempfile.mkdtemp(prefix="imageops-docker-config-")  # mkdtemp makes it 0700
    try:
        auths: dict[str, dict[str, str]] = {}
        if auth is not None:
            # Docker's credential lookup knows Docker Hub only by its legacy key.
            hub = auth.registry in (*DOCKER_HUB_HOSTS, DOCKER_HUB_CONFIG_KEY)
            key = DOCKER_HUB_CONFIG_KEY if hub else auth.registry
            token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
            auths[key] = {"auth": token}
        path = os.path.join(directory, "config.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as config:
            json.dump({"auths": auths}, config)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class DockerCliBackend:
    """ImageBackend through the ``docker`` command line."""

    name = "cli"

    def __init__(
        self,
        docker_host: str | None = None,
        *,
        binary: str | None = None,
        timeout: float = 60.0,
        registry: RegistryClient | None = None,
    ) -> None:
        """Run ``binary`` (default: ``docker`` on PATH) against ``docker_host`` (else DOCKER_HOST).

        ``timeout`` bounds every command except pull and push, which only a
        CancelToken stops; ``registry`` answers registry_digest.
        """
        self._binary = binary or shutil.which("docker")
        self._host = docker_host
        self._timeout = timeout
        self._registry = registry or RegistryClient()

    def _argv(self, args: Sequence[str]) -> list[str]:
        if self._binary is None:
            raise OperationError(ErrorReason.DAEMON_UNAVAILABLE, "no docker command on PATH")
        host = ["-H", self._host] if self._host else []
        return [self._binary, *host, *args]

    def _env(self, config_dir: str) -> dict[str, str]:
        env = dict(os.environ, DOCKER_CONFIG=config_dir, DOCKER_CLI_HINTS="false")
        if self._host:
            # An explicit host wins over any context the environment selects.
            env.pop("DOCKER_CONTEXT", None)
        return env

    def _run(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run a short command to completion (bounded by the timeout)."""
        argv = self._argv(args)
        with docker_config(None) as config_dir:
            try:
                return subprocess.run(
                    argv,
                    capture_output=True,
                    encoding="utf-8",
                    errors="replace",
                    timeout=self._timeout,
                    env=self._env(config_dir),
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired as exc:
                # Our bound on a short command, not the operation's deadline: dockerd is stuck.
                message = f"docker {args[0]} did not finish within {self._timeout}s"
                raise OperationError(ErrorReason.DAEMON_UNAVAILABLE, message) from exc
            except OSError as exc:
                raise OperationError(ErrorReason.DAEMON_UNAVAILABLE, f"{argv[0]}: {exc}") from exc

    def ping(self) -> None:
        """Raise OperationError(DaemonUnavailable) unless the daemon answers."""
        done = self._run(["version", "--format", "{{.Server.Version}}"])
        if done.returncode != 0 or not done.stdout.strip():
            message = _failure_text(done.stderr, done.stdout, done.returncode)
            raise OperationError(ErrorReason.DAEMON_UNAVAILABLE, message)

    def inspect(self, ref: str) -> ImageInfo | None:
        """The local image named ``ref``, or None when there is none."""
        done = self._run(["image", "inspect", "--format", "{{json .}}", "--", ref])
        if done.returncode != 0:
            error = _command_error(done.stderr, done.stdout, done.returncode)
            if error.reason is ErrorReason.NOT_FOUND:
                return None
            raise error
        data = json.loads(done.stdout)
        return ImageInfo.from_inspect(data)

    def pull(
        self,
        ref: str,
        *,
        auth: RegistryAuth | None,
        platform: str | None,
        on_progress: ProgressCallback,
        cancel: CancelToken,
    ) -> PullResult:
        """Pull ``ref``; a failed command raises OperationError classified from stderr."""
        parsed = parse_reference(ref)
        options = ["--platform", platform] if platform else []
        reader = StreamReader("pull", on_progress)
        self._stream("pull", ["pull", *options, "--", str(parsed)], auth, reader, cancel)
        image = require_image(self, str(parsed))
        digest = reader.digest or repo_digest(image, parsed)
        return PullResult(digest=digest, image=image, cache_hit=reader.tracker.cache_hit)

    def push(
        self,
        ref: str,
        *,
        auth: RegistryAuth | None,
        on_progress: ProgressCallback,
        cancel: CancelToken,
    ) -> PushResult:
        """Push ``ref``; the digest comes from the "digest: ... size: N" line, then RepoDigests."""
        parsed = parse_reference(ref)
        # Without a tag some docker versions push every tag of the repository.
        target = push_target(parsed)
        reader = StreamReader("push", on_progress)
        self._stream("push", ["push", "--", target], auth, reader, cancel)
        if reader.digest:
            return PushResult(digest=reader.digest, size_bytes=reader.size)
        digest = repo_digest(require_image(self, target), parsed)
        if digest is None:
            raise OperationError(ErrorReason.UNKNOWN, f"push of {ref} reported no digest")
        return PushResult(digest=digest)

    def _stream(
        self,
        what: str,
        args: Sequence[str],
        auth: RegistryAuth | None,
        reader: StreamReader,
        cancel: CancelToken,
    ) -> None:
        """Run a pull/push command, feeding its stdout lines to ``reader``; kill it on cancel."""
        if cancel.cancelled:
            raise cancelled_error(cancel, what)
        argv = self._argv(args)
        with docker_config(auth) as config_dir:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                    encoding="utf-8",
                    errors="replace",
                    env=self._env(config_dir),
                )
            except OSError as exc:
                raise OperationError(ErrorReason.DAEMON_UNAVAILABLE, f"{argv[0]}: {exc}") from exc
            returncode, stderr = self._follow(proc, reader, cancel)
        if cancel.cancelled:
            raise cancelled_error(cancel, what)
        if returncode != 0:
            raise self._stream_error(stderr, returncode)

    def _stream_error(self, stderr: str, returncode: int) -> OperationError:
        """Classify a failed pull/push; a broken link to the daemon looks like a registry fault."""
        error = _command_error(stderr, "", returncode)
        # "unexpected EOF" without "Error response from daemon" may be the command's own
        # connection to dockerd breaking: if the daemon is gone, say so.
        vague = (ErrorReason.REGISTRY_UNAVAILABLE, ErrorReason.NETWORK, ErrorReason.UNKNOWN)
        if error.reason in vague and "Error response from daemon" not in stderr:
            try:
                self.ping()
            except OperationError as down:
                return down
        return error

    @staticmethod
    def _follow(
        proc: subprocess.Popen[str], reader: StreamReader, cancel: CancelToken
    ) -> tuple[int, str]:
        """Read the process to its end; (exit code, stderr)."""
        errors: list[str] = []
        # stderr is drained on its own thread so a chatty one cannot block stdout.
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None  # Popen(stdout=PIPE, stderr=PIPE)
        drain = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
        drain.start()
        cancel.on_cancel(proc.kill)
        read_all = False
        try:
            for line in stdout:
                if line.strip() and not cancel.cancelled:
                    reader.feed(parse_cli_line(line))
            read_all = True
        finally:
            if not read_all:
                # A callback raised: stop the command rather than leave it pulling.
                proc.kill()
            returncode = proc.wait()
            drain.join()
        return returncode, "".join(errors)

    def tag(self, source: str, target: str) -> None:
        """Point ``target`` at the image ``source`` names (moves an existing tag)."""
        done = self._run(["tag", "--", source, push_target(parse_reference(target))])
        if done.returncode != 0:
            raise _command_error(done.stderr, done.stdout, done.returncode)

    def remove(self, ref: str) -> None:
        """Untag ``ref`` (the image itself stays if other names use it); missing is not an error."""
        done = self._run(["image", "rm", "--no-prune", "--", ref])
        if done.returncode != 0:
            error = _command_error(done.stderr, done.stdout, done.returncode)
            if error.reason is not ErrorReason.NOT_FOUND:
                raise error

    def registry_digest(self, ref: str, *, auth: RegistryAuth | None) -> str:
        """Ask the registry's v2 API which digest ``ref`` resolves to (HEAD on the manifest)."""
        return self._registry.manifest_digest(ref, auth)


def _failure_text(stderr: str, stdout: str, returncode: int) -> str:
    text = stderr.strip() or stdout.strip()
    return text or f"docker exited with status {returncode}"


def _command_error(stderr: str, stdout: str, returncode: int) -> OperationError:
    """Classify a failed command by its message."""
    message = _failure_text(stderr, stdout, returncode)
    if classify_message(message) is ErrorReason.UNKNOWN and returncode < 0:
        return OperationError(ErrorReason.UNKNOWN, f"docker killed by signal {-returncode}")
    return from_message(message)
