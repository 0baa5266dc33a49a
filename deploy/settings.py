"""Settings of the Lambda transport, read from the function's environment.

The core's settings (Redis, history, archive, JWT, providers) come from the gateway's
config as everywhere else; these are the few knobs only the API Gateway transport has:

- ``CHATGATE_COALESCE_BYTES`` (256): flush buffered deltas once they hold this many bytes,
- ``CHATGATE_COALESCE_MS`` (20): ... or once the oldest of them has waited this long;
- ``CHATGATE_CANCEL_POLL_MS`` (100): how often a running turn looks for a ``cancel``;
- ``CHATGATE_CONNECTION_TTL_S`` (7500): lifetime of a connection's record in Redis;
- ``CHATGATE_CHAT_LEASE_S`` (900): a chat left in flight by a crashed invocation expires;
- ``CHATGATE_MANAGEMENT_URL`` (``https://{domainName}/{stage}``): the Management API
  endpoint, a template over the event's ``domainName`` and ``stage`` (a custom domain, or
  the local emulator's ``http://{domainName}/{stage}``);
- ``CHATGATE_TURN_FUNCTION`` (empty): ``NAME:ALIAS`` of the function that runs chat turns
  asynchronously (see :mod:`deploy.dispatch`); empty: turns run inline in ``$default``;
- ``CHATGATE_EMF_NAMESPACE`` (``Chatgate`` on Lambda, else empty): CloudWatch embedded
  metric namespace; empty: no metric lines.

API Gateway keeps a WebSocket connection at most two hours, hence a connection TTL a
little over that; a Lambda invocation lasts at most 15 minutes, hence the chat lease.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

DEFAULT_MANAGEMENT_URL = "https://{domainName}/{stage}"
LOCAL_MANAGEMENT_URL = "http://{domainName}/{stage}"
N = TypeVar("N", int, float)


class SettingsError(ValueError):
    """A transport setting is invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    """Explicit credentials (the local emulator's dummy ones); None: the default chain."""

    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True, slots=True)
class LambdaSettings:
    coalesce_bytes: int = 256
    coalesce_ms: float = 20.0
    cancel_poll_ms: float = 100.0
    connection_ttl_s: int = 7500
    chat_lease_s: int = 900
    management_url: str = DEFAULT_MANAGEMENT_URL
    region: str = "us-east-1"
    credentials: AwsCredentials | None = None
    emf_namespace: str = ""
    turn_function: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LambdaSettings:
        on_lambda = bool(env.get("AWS_LAMBDA_FUNCTION_NAME"))
        return cls(
            coalesce_bytes=_number(env, "CHATGATE_COALESCE_BYTES", 256, int),
            coalesce_ms=_number(env, "CHATGATE_COALESCE_MS", 20.0, float),
            cancel_poll_ms=_number(env, "CHATGATE_CANCEL_POLL_MS", 100.0, float, minimum=1),
            connection_ttl_s=_number(env, "CHATGATE_CONNECTION_TTL_S", 7500, int, minimum=1),
            chat_lease_s=_number(env, "CHATGATE_CHAT_LEASE_S", 900, int, minimum=1),
            management_url=env.get("CHATGATE_MANAGEMENT_URL") or DEFAULT_MANAGEMENT_URL,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            emf_namespace=env.get("CHATGATE_EMF_NAMESPACE",
                                  "Chatgate" if on_lambda else ""),
            turn_function=env.get("CHATGATE_TURN_FUNCTION", ""),
        )

    def for_local_emulator(self) -> LambdaSettings:
        """Plain HTTP to the emulator's own management API, with dummy credentials."""
        url = (self.management_url if self.management_url != DEFAULT_MANAGEMENT_URL
               else LOCAL_MANAGEMENT_URL)
        return replace(self, management_url=url, emf_namespace="", turn_function="",
                       credentials=self.credentials or AwsCredentials("local", "local"))

    def management_endpoint(self, *, domain_name: str, stage: str) -> str:
        return self.management_url.format(domainName=domain_name, stage=stage).rstrip("/")


def _number(env: Mapping[str, str], name: str, default: N, kind: type[N], *,
            minimum: float = 0) -> N:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}: must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name}: must be >= {minimum}, got {raw!r}")
    return value
