"""The processes a benchmark run starts: upstream, redis-server, chatgate, the references.

Every service is pinned to a core once it is ready (``sched_setaffinity`` on each thread
of its process tree, as ``taskset -a -p`` does: gateways and chatgate's Redis on the
gateway core, the mock upstream on the load core; the load generator itself starts under
``taskset``), logs to a file in the run's work directory, and is stopped by its own
process group at the end. A reference that cannot
start raises :class:`StartError` with the reason; the run reports it and goes on.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = BENCH / ".peers"
LITELLM = PEERS / "litellm" / "venv" / "bin" / "litellm"
PORTKEY_SERVER = (PEERS / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build"
                  / "start-server.js")
LOADGEN_PYTHON = PEERS / "loadgen" / "venv" / "bin" / "python"
MODEL = "bench-model"
BRAND = "bench"
PLAN = "bench"


class StartError(RuntimeError):
    """A service did not come up; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool_python() -> str:
    """The interpreter for the upstream and the load generator: the loadgen venv (with
    uvloop) when ``--setup`` made one, else this one."""
    return str(LOADGEN_PYTHON) if LOADGEN_PYTHON.exists() else sys.executable


def pinned(cmd: Sequence[str], core: int | None) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return list(cmd)
    return ["taskset", "-c", str(core), *cmd]


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    core: int | None
    info: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM to its process group (the process and the workers it forked), then
        SIGKILL after a grace period."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def pin(pid: int, core: int | None) -> None:
    """Pin every thread of ``pid``'s process tree to ``core`` (what ``taskset -a -p``
    does); processes it forks later inherit the mask."""
    if core is None:
        return
    import procstat

    for process in procstat.tree(pid):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{process}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), {core})


def start(name: str, cmd: Sequence[str], *, port: int, workdir: Path, core: int | None,
          ready: Callable[[], bool], timeout_s: float = 60.0,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> Service:
    """Start ``cmd`` in its own process group and wait until ``ready()``. Start-up may use
    every core (LiteLLM's workers take tens of CPU-seconds to import); once ready, the whole
    process tree is pinned to ``core``."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                cwd=cwd or workdir, start_new_session=True)
    service = Service(name=name, proc=proc, port=port, log=log, core=core)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartError(f"{name} exited with {proc.returncode}: {service.log_tail(6)}")
        if ready():
            pin(service.pid, core)
            return service
        time.sleep(0.2)
    service.stop()
    raise StartError(f"{name} not ready within {timeout_s:.0f}s: {service.log_tail(6)}")


def http_ok(url: str, *, headers: dict[str, str] | None = None) -> Callable[[], bool]:
    def check() -> bool:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(200 <= response.status < 500)
        except urllib.error.HTTPError as exc:
            return exc.code < 500
        except (OSError, urllib.error.URLError):
            return False
    return check


def port_open(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False
    return check


def post_json(url: str, body: bytes, headers: dict[str, str] | None = None,
              timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- the processes ----------------------------------------------------------------------


def start_upstream(workdir: Path, core: int | None) -> Service:
    port = free_port()
    cmd = [tool_python(), str(BENCH / "upstream.py"), "--port", str(port),
           "--profile", "instant"]
    return start("upstream", cmd, port=port, workdir=workdir, core=core,
                 ready=http_ok(f"http://127.0.0.1:{port}/healthz"), timeout_s=20)


def set_profile(upstream: Service, **profile: object) -> None:
    import json

    status, body = post_json(f"http://127.0.0.1:{upstream.port}/bench/profile",
                             json.dumps(profile).encode())
    if status != 200:
        raise RuntimeError(f"upstream refused profile {profile}: {status} {body[:200]!r}")


def start_redis(workdir: Path, core: int | None, *, wrapper: Sequence[str] = (),
                timeout_s: float = 10) -> Service:
    """A redis-server of its own (run under ``wrapper``, such as valgrind, if given)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise StartError("redis-server not found (apt-get install redis-server)")
    port = free_port()
    data = workdir / "redis"
    data.mkdir(exist_ok=True)
    cmd = [*wrapper, binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--dir", str(data), "--daemonize", "no", "--protected-mode",
           "yes", "--maxclients", "20000"]
    return start("redis", cmd, port=port, workdir=workdir, core=core, ready=port_open(port),
                 timeout_s=timeout_s)


def start_bare(workdir: Path, upstream: Service, core: int | None) -> Service:
    port = free_port()
    cmd = [sys.executable, str(BENCH / "bare_proxy.py"), "--port", str(port), "--upstream",
           f"http://127.0.0.1:{upstream.port}/v1"]
    return start("bare-proxy", cmd, port=port, workdir=workdir, core=core,
                 ready=http_ok(f"http://127.0.0.1:{port}/healthz"), timeout_s=20)


def chatgate_config(*, upstream_port: int, redis_port: int, workdir: Path,
                    jwt_secret: str) -> str:
    """A config whose budgets and rate limits never refuse (finite limits far above what
    a run uses, so every check does its full work); the product otherwise as is."""
    return f"""# written by bench/run.py: budgets, memory and cache on; limits that never refuse
[settings]
redis_url = "redis://127.0.0.1:{redis_port}/0"
history_url = "sqlite:///{workdir}/history.db"
archive_url = ""
jwt_secret = "{jwt_secret}"

[plans.{PLAN}]
tokens_per_day = 1_000_000_000_000
tokens_per_month = 1_000_000_000_000
max_context_window = 32000
history_ttl_days = 1
archive = false

[brands.{BRAND}]
providers = ["openai:{MODEL}"]
tokens_per_conversation = 1_000_000_000
monthly_budget = 1_000_000_000_000
alert_threshold = 0.99
system_prompt = "You are the benchmark's assistant."
cache = "brand"
cache_ttl_s = 3600
requests_per_minute_per_user = 100000000
requests_per_second_per_brand = 100000000

[providers.openai]
base_url = "http://127.0.0.1:{upstream_port}/v1"
api_key = "bench"

[pricing."{MODEL}"]
input = 0.15
output = 0.60
"""


def start_chatgate(workdir: Path, upstream: Service, redis: Service, core: int | None, *,
                   jwt_secret: str, log_level: str = "INFO", source: Path | None = None,
                   name: str = "chatgate") -> Service:
    """``chatgate serve`` as installed, or, with ``source``, the packages of that source
    tree (a checkout of another revision) on the same interpreter and dependencies."""
    port = free_port()
    config = workdir / "bench-generated.toml"
    config.write_text(chatgate_config(upstream_port=upstream.port, redis_port=redis.port,
                                      workdir=workdir, jwt_secret=jwt_secret))
    args = ["serve", "--config", str(config), "--port", str(port), "--log-level", log_level]
    env: dict[str, str] | None = None
    if source is None:
        chatgate = ROOT / ".venv" / "bin" / "chatgate"
        cmd = [str(chatgate) if chatgate.exists() else shutil.which("chatgate") or "chatgate",
               *args]
    else:
        python = ROOT / ".venv" / "bin" / "python"
        cmd = [str(python) if python.exists() else sys.executable, "-c",
               "import sys; from gateway.cli import main; sys.exit(main())", *args]
        env = {"PYTHONPATH": str(source)}
    service = start(name, cmd, port=port, workdir=workdir, core=core,
                    ready=http_ok(f"http://127.0.0.1:{port}/healthz"), timeout_s=60,
                    cwd=workdir, env=env)
    service.info["config"] = str(config)
    return service


def mint_token(secret: str, user: str, ttl_s: int = 6 * 3600) -> str:
    import jwt

    now = int(time.time())
    return jwt.encode({"sub": user, "brand": BRAND, "plan": PLAN, "iat": now,
                       "exp": now + ttl_s}, secret, algorithm="HS256")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def start_litellm(workdir: Path, upstream: Service, core: int | None, *,
                  workers: int) -> Service:
    if not LITELLM.exists():
        raise StartError("not installed (run: .venv/bin/python bench/run.py --setup)")
    port = free_port()
    master_key = "sk-bench-" + secrets.token_hex(24)
    config = workdir / f"litellm-{workers}w.yaml"
    config.write_text(f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: http://127.0.0.1:{upstream.port}/v1
      api_key: bench
litellm_settings:
  drop_params: true
  telemetry: false
general_settings:
  master_key: {master_key}
""")
    cmd = [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
           "--num_workers", str(workers)]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_MASTER_KEY": master_key, "DISABLE_ADMIN_UI": "True",
           "NO_DOCS": "True", "PYTHONUNBUFFERED": "1"}
    service = start(f"litellm-{workers}w", cmd, port=port, workdir=workdir, core=core,
                    ready=http_ok(f"http://127.0.0.1:{port}/health/liveliness"),
                    timeout_s=120, env=env)
    service.info["master_key"] = master_key
    return service


def start_portkey(workdir: Path, core: int | None) -> Service:
    if not PORTKEY_SERVER.exists():
        raise StartError("not installed (run: .venv/bin/python bench/run.py --setup)")
    node = shutil.which("node")
    if node is None:
        raise StartError("node not found (apt-get install nodejs npm)")
    port = free_port()
    cmd = [node, str(PORTKEY_SERVER), f"--port={port}", "--headless"]
    return start("portkey", cmd, port=port, workdir=workdir, core=core,
                 ready=http_ok(f"http://127.0.0.1:{port}/"), timeout_s=60,
                 env={"NODE_ENV": "production"})


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()


def source_revision() -> str | None:
    """The checkout's commit, and whether the packages that run differ from it (None
    outside a git checkout): which code a report's figures are of."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        changed = _git("status", "--porcelain", "--", "gateway", "providers", "memory",
                       "budgets", "deploy", "pyproject.toml")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}, with uncommitted changes" if changed else commit


def versions() -> dict[str, str]:
    """Versions of what runs, for the report."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for dist in ("aiohttp", "chatgate"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    revision = source_revision()
    if revision and "chatgate" in out:
        out["chatgate"] += f" ({revision})"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        litellm_py = LITELLM.parent / "python"
        if litellm_py.exists():
            out["litellm"] = subprocess.run(
                [str(litellm_py), "-c", "import importlib.metadata as m; "
                 "print(m.version('litellm'))"], capture_output=True, text=True,
                timeout=30).stdout.strip()
    package = PEERS / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
    if package.exists():
        import json

        out["@portkey-ai/gateway"] = json.loads(package.read_text())["version"]
    node = shutil.which("node")
    if node:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out["node"] = subprocess.run([node, "--version"], capture_output=True, text=True,
                                         timeout=10).stdout.strip()
    redis = shutil.which("redis-server")
    if redis:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            text = subprocess.run([redis, "--version"], capture_output=True, text=True,
                                  timeout=10).stdout
            out["redis-server"] = next((w[2:] for w in text.split() if w.startswith("v=")),
                                       text.strip())
    return out
