"""A real Redis for the tests: our own redis-server on a free port, an existing server named
by ``CHATGATE_TEST_REDIS_URL``, or (``CHATGATE_TEST_REDIS=docker`` with a Docker engine that
answers) a testcontainers Redis.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"redis-server did not listen on {port} within {timeout}s")


@contextmanager
def local_redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server not found: install Debian's redis-server (apt-get install "
            "redis-server), or set CHATGATE_TEST_REDIS_URL to a server the tests may flush"
        )
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="chatgate-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", workdir, "--daemonize", "no", "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def container_redis_server() -> Iterator[str]:
    from testcontainers.redis import RedisContainer

    with RedisContainer("redis:7-alpine") as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        yield f"redis://{host}:{port}/0"


@contextmanager
def redis_server() -> Iterator[str]:
    """The URL of a Redis server the tests own for the session."""
    url = os.environ.get("CHATGATE_TEST_REDIS_URL")
    if url:
        yield url
    elif os.environ.get("CHATGATE_TEST_REDIS") == "docker":
        with container_redis_server() as url:
            yield url
    else:
        with local_redis_server() as url:
            yield url
