"""The gateway's configuration: a TOML file (or the built-in sample), validated at start.

Every error names the offending key (``brands.growain.alert_threshold: must be …``) so a
bad file fails loudly at start rather than during a user's turn. Environment settings
(``CHATGATE_*``) override the file's ``[settings]`` table.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

UNLIMITED = -1
CacheScope = Literal["brand", "user", "off"]
PROVIDER_KINDS = ("openai", "anthropic", "bedrock", "mock")
# Which environment variable carries each provider's credentials.
PROVIDER_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    tokens_per_day: int
    tokens_per_month: int
    max_context_window: int
    history_ttl_days: int
    archive: bool


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One link of a brand's chain: ``kind:model``."""

    kind: str
    model: str

    @classmethod
    def parse(cls, text: str, *, key: str) -> ProviderSpec:
        kind, sep, model = text.partition(":")
        if not sep or not model or kind not in PROVIDER_KINDS:
            raise ConfigError(
                f"{key}: {text!r} must be 'PROVIDER:MODEL' with PROVIDER one of "
                f"{', '.join(PROVIDER_KINDS)}"
            )
        return cls(kind=kind, model=model)

    def __str__(self) -> str:
        return f"{self.kind}:{self.model}"


@dataclass(frozen=True, slots=True)
class MockSettings:
    """Behaviour of the deterministic ``mock`` provider (per brand or model)."""

    answer_tokens: int = 24
    token_delay_ms: float = 0.0
    first_token_delay_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Brand:
    name: str
    providers: tuple[ProviderSpec, ...]
    tokens_per_conversation: int
    monthly_budget: int
    alert_threshold: float
    system_prompt: str = ""
    cache: CacheScope = "brand"
    cache_ttl_s: int = 3600
    requests_per_minute_per_user: int = 60
    requests_per_second_per_brand: int = 500
    mock: MockSettings | None = None


@dataclass(frozen=True, slots=True)
class Price:
    """USD per one million tokens."""

    input: float
    output: float


@dataclass(frozen=True, slots=True)
class Limits:
    """Protocol limits and timings (``[gateway]`` table)."""

    max_frame_bytes: int = 64 * 1024
    max_message_chars: int = 32_000
    default_max_tokens: int = 512
    max_chats_per_socket: int = 16
    outbound_queue_frames: int = 256
    hot_ttl_s: int = 300
    hot_messages: int = 50
    reservation_lease_s: int = 120
    heartbeat_s: float = 30.0
    # Outbox entries a crashed process left unacknowledged are reclaimed after this idle time.
    outbox_claim_idle_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """Connection options per provider kind (``[providers.KIND]``)."""

    base_url: str | None = None
    api_key: str | None = None
    region: str | None = None
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 30.0
    chunk_timeout_s: float = 30.0
    max_retries: int = 2
    # Router: exponential backoff with full jitter between retries before the first token;
    # a provider's retry-after longer than max_retry_after_s moves on to the next provider.
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 4.0
    max_retry_after_s: float = 10.0
    # Circuit breaker per provider and model: open after this many consecutive failures
    # (0: never), probe again after the cool-down.
    circuit_failure_threshold: int = 5
    circuit_cooldown_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the backends live (``[settings]`` table, overridden by ``CHATGATE_*``)."""

    redis_url: str = "memory://"
    history_url: str = "sqlite:///./.chatgate/history.db"
    archive_url: str = "file://./.chatgate/archive"
    jwt_secret: str | None = None
    jwt_public_key_file: str | None = None
    jwks_url: str | None = None
    alert_sns_topic_arn: str | None = None
    alert_webhook_url: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    plans: Mapping[str, Plan]
    brands: Mapping[str, Brand]
    pricing: Mapping[str, Price]
    limits: Limits = field(default_factory=Limits)
    settings: Settings = field(default_factory=Settings)
    providers: Mapping[str, ProviderOptions] = field(default_factory=dict)
    mock: MockSettings = field(default_factory=MockSettings)
    mock_models: Mapping[str, MockSettings] = field(default_factory=dict)
    source: str = "built-in sample"

    def plan(self, name: str) -> Plan | None:
        return self.plans.get(name)

    def brand(self, name: str) -> Brand | None:
        return self.brands.get(name)

    def provider_options(self, kind: str) -> ProviderOptions:
        return self.providers.get(kind, ProviderOptions())

    def mock_settings(self, brand: str, model: str) -> MockSettings:
        own = self.brands[brand].mock if brand in self.brands else None
        return own or self.mock_models.get(model) or self.mock

    def price(self, model: str) -> Price | None:
        return self.pricing.get(model)


# ---------------------------------------------------------------------------------------
# Parsing: small typed readers that name the key on every failure.


def _table(data: Mapping[str, Any], name: str, key: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: must be a table")
    return value


def _int(data: Mapping[str, Any], name: str, key: str, *, default: int | None = None,
         minimum: int = 0, allow_unlimited: bool = False) -> int:
    if name not in data:
        if default is None:
            raise ConfigError(f"{key}.{name}: missing")
        return default
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}.{name}: must be an integer, got {value!r}")
    if allow_unlimited and value == UNLIMITED:
        return value
    if value < minimum:
        hint = " (or -1 for unlimited)" if allow_unlimited else ""
        raise ConfigError(f"{key}.{name}: must be >= {minimum}{hint}, got {value}")
    return value


def _float(data: Mapping[str, Any], name: str, key: str, *, default: float | None = None,
           minimum: float = 0.0, maximum: float | None = None) -> float:
    if name not in data:
        if default is None:
            raise ConfigError(f"{key}.{name}: missing")
        return default
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}.{name}: must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{key}.{name}: must be {bound}, got {value}")
    return float(value)


def _str(data: Mapping[str, Any], name: str, key: str, default: str | None = None) -> str | None:
    value = data.get(name, default)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{key}.{name}: must be a string, got {value!r}")
    return value


def _no_unknown(data: Mapping[str, Any], allowed: set[str], key: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        allowed_list = ", ".join(sorted(allowed))
        raise ConfigError(f"{key}.{unknown[0]}: unknown key (allowed: {allowed_list})")


def _parse_plan(name: str, data: Mapping[str, Any]) -> Plan:
    key = f"plans.{name}"
    _no_unknown(data, {"tokens_per_day", "tokens_per_month", "max_context_window",
                       "history_ttl_days", "archive"}, key)
    archive = data.get("archive", False)
    if not isinstance(archive, bool):
        raise ConfigError(f"{key}.archive: must be true or false")
    return Plan(
        name=name,
        tokens_per_day=_int(data, "tokens_per_day", key, allow_unlimited=True),
        tokens_per_month=_int(data, "tokens_per_month", key, allow_unlimited=True),
        max_context_window=_int(data, "max_context_window", key, minimum=64),
        history_ttl_days=_int(data, "history_ttl_days", key, minimum=1),
        archive=archive,
    )


def _parse_mock(data: Mapping[str, Any], key: str, base: MockSettings) -> MockSettings:
    _no_unknown(data, {"answer_tokens", "token_delay_ms", "first_token_delay_ms"}, key)
    return MockSettings(
        answer_tokens=_int(data, "answer_tokens", key, default=base.answer_tokens, minimum=1),
        token_delay_ms=_float(data, "token_delay_ms", key, default=base.token_delay_ms),
        first_token_delay_ms=_float(
            data, "first_token_delay_ms", key, default=base.first_token_delay_ms
        ),
    )


_BRAND_KEYS = {
    "providers", "tokens_per_conversation", "monthly_budget", "alert_threshold",
    "system_prompt", "cache", "cache_ttl_s", "requests_per_minute_per_user",
    "requests_per_second_per_brand", "mock",
}


def _parse_brand(name: str, data: Mapping[str, Any], mock_base: MockSettings) -> Brand:
    key = f"brands.{name}"
    _no_unknown(data, _BRAND_KEYS, key)
    chain = data.get("providers", ["mock:mock-1"])
    if not isinstance(chain, list) or not chain or not all(isinstance(s, str) for s in chain):
        raise ConfigError(f"{key}.providers: must be a non-empty list of 'PROVIDER:MODEL'")
    cache = data.get("cache", "brand")
    if cache not in ("brand", "user", "off"):
        raise ConfigError(f"{key}.cache: must be 'brand', 'user' or 'off', got {cache!r}")
    mock_table = _table(data, "mock", f"{key}.mock") if "mock" in data else None
    return Brand(
        name=name,
        providers=tuple(ProviderSpec.parse(s, key=f"{key}.providers") for s in chain),
        tokens_per_conversation=_int(data, "tokens_per_conversation", key, default=UNLIMITED,
                                     minimum=1, allow_unlimited=True),
        monthly_budget=_int(data, "monthly_budget", key, default=UNLIMITED, minimum=1,
                            allow_unlimited=True),
        alert_threshold=_float(data, "alert_threshold", key, default=0.8, maximum=1.0),
        system_prompt=_str(data, "system_prompt", key, "") or "",
        cache=cache,
        cache_ttl_s=_int(data, "cache_ttl_s", key, default=3600, minimum=1),
        requests_per_minute_per_user=_int(data, "requests_per_minute_per_user", key,
                                          default=60, minimum=1),
        requests_per_second_per_brand=_int(data, "requests_per_second_per_brand", key,
                                           default=500, minimum=1),
        mock=_parse_mock(mock_table, f"{key}.mock", mock_base) if mock_table is not None
        else None,
    )


def _parse_limits(data: Mapping[str, Any]) -> Limits:
    key, d = "gateway", Limits()
    _no_unknown(data, set(Limits.__dataclass_fields__), key)
    return Limits(
        max_frame_bytes=_int(data, "max_frame_bytes", key, default=d.max_frame_bytes, minimum=256),
        max_message_chars=_int(data, "max_message_chars", key, default=d.max_message_chars,
                               minimum=1),
        default_max_tokens=_int(data, "default_max_tokens", key, default=d.default_max_tokens,
                                minimum=1),
        max_chats_per_socket=_int(data, "max_chats_per_socket", key,
                                  default=d.max_chats_per_socket, minimum=1),
        outbound_queue_frames=_int(data, "outbound_queue_frames", key,
                                   default=d.outbound_queue_frames, minimum=1),
        hot_ttl_s=_int(data, "hot_ttl_s", key, default=d.hot_ttl_s, minimum=1),
        hot_messages=_int(data, "hot_messages", key, default=d.hot_messages, minimum=2),
        reservation_lease_s=_int(data, "reservation_lease_s", key,
                                 default=d.reservation_lease_s, minimum=1),
        heartbeat_s=_float(data, "heartbeat_s", key, default=d.heartbeat_s, minimum=1.0),
        outbox_claim_idle_ms=_int(data, "outbox_claim_idle_ms", key,
                                  default=d.outbox_claim_idle_ms, minimum=1),
    )


def _parse_provider_options(kind: str, data: Mapping[str, Any]) -> ProviderOptions:
    key, d = f"providers.{kind}", ProviderOptions()
    if kind not in PROVIDER_KINDS:
        raise ConfigError(f"{key}: unknown provider (known: {', '.join(PROVIDER_KINDS)})")
    _no_unknown(data, set(ProviderOptions.__dataclass_fields__), key)
    return ProviderOptions(
        base_url=_str(data, "base_url", key),
        api_key=_str(data, "api_key", key),
        region=_str(data, "region", key),
        connect_timeout_s=_float(data, "connect_timeout_s", key, default=d.connect_timeout_s),
        first_token_timeout_s=_float(data, "first_token_timeout_s", key,
                                     default=d.first_token_timeout_s),
        chunk_timeout_s=_float(data, "chunk_timeout_s", key, default=d.chunk_timeout_s),
        max_retries=_int(data, "max_retries", key, default=d.max_retries),
        backoff_base_s=_float(data, "backoff_base_s", key, default=d.backoff_base_s),
        backoff_cap_s=_float(data, "backoff_cap_s", key, default=d.backoff_cap_s),
        max_retry_after_s=_float(data, "max_retry_after_s", key, default=d.max_retry_after_s),
        circuit_failure_threshold=_int(data, "circuit_failure_threshold", key,
                                       default=d.circuit_failure_threshold),
        circuit_cooldown_s=_float(data, "circuit_cooldown_s", key,
                                  default=d.circuit_cooldown_s),
    )


_SETTINGS_ENV = {
    "redis_url": "CHATGATE_REDIS_URL",
    "history_url": "CHATGATE_HISTORY_URL",
    "archive_url": "CHATGATE_ARCHIVE_URL",
    "jwt_secret": "CHATGATE_JWT_SECRET",
    "jwt_public_key_file": "CHATGATE_JWT_PUBLIC_KEY_FILE",
    "jwks_url": "CHATGATE_JWKS_URL",
    "alert_sns_topic_arn": "CHATGATE_ALERT_SNS_TOPIC_ARN",
    "alert_webhook_url": "CHATGATE_ALERT_WEBHOOK_URL",
}


def _parse_settings(data: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    key = "settings"
    _no_unknown(data, set(_SETTINGS_ENV), key)
    values: dict[str, str | None] = {}
    for name, var in _SETTINGS_ENV.items():
        default = getattr(Settings(), name)
        values[name] = env.get(var) if var in env else _str(data, name, key, default)
    return Settings(**values)  # type: ignore[arg-type]


def _parse_pricing(data: Mapping[str, Any]) -> dict[str, Price]:
    prices = {}
    for model, table in data.items():
        key = f'pricing."{model}"'
        if not isinstance(table, Mapping):
            raise ConfigError(f"{key}: must be a table with input and output")
        _no_unknown(table, {"input", "output"}, key)
        prices[model] = Price(input=_float(table, "input", key),
                              output=_float(table, "output", key))
    return prices


_TOP_KEYS = {"plans", "brands", "pricing", "gateway", "settings", "providers", "mock"}


def parse_config(data: Mapping[str, Any], *, env: Mapping[str, str], source: str) -> Config:
    _no_unknown(data, _TOP_KEYS, "(top level)")
    plans_table = _table(data, "plans", "plans")
    plans = {n: _parse_plan(n, _table(plans_table, n, f"plans.{n}")) for n in plans_table}
    if not plans:
        raise ConfigError("plans: at least one plan is required")
    mock_table = dict(_table(data, "mock", "mock"))
    mock_models_table = mock_table.pop("models", {})
    mock = _parse_mock(mock_table, "mock", MockSettings())
    models_table = _table({"models": mock_models_table}, "models", "mock.models")
    mock_models = {m: _parse_mock(_table(models_table, m, f'mock.models."{m}"'),
                                  f'mock.models."{m}"', mock)
                   for m in models_table}
    brands_table = _table(data, "brands", "brands")
    brands = {n: _parse_brand(n, _table(brands_table, n, f"brands.{n}"), mock)
              for n in brands_table}
    if not brands:
        raise ConfigError("brands: at least one brand is required")
    providers_table = _table(data, "providers", "providers")
    providers = {k: _parse_provider_options(k, _table(providers_table, k, f"providers.{k}"))
                 for k in providers_table}
    return Config(
        plans=plans,
        brands=brands,
        pricing=_parse_pricing(_table(data, "pricing", "pricing")),
        limits=_parse_limits(_table(data, "gateway", "gateway")),
        settings=_parse_settings(_table(data, "settings", "settings"), env),
        providers=providers,
        mock=mock,
        mock_models=mock_models,
        source=source,
    )


def _with_sample_chains(config: Config, env: Mapping[str, str]) -> Config:
    """The sample's brands lead with providers whose keys are set, then fall back to mock."""
    brands = {}
    for name, brand in config.brands.items():
        live = tuple(s for s in brand.providers
                     if s.kind in PROVIDER_KEY_ENV and env.get(PROVIDER_KEY_ENV[s.kind]))
        fallback = ProviderSpec(kind="mock", model=brand.providers[0].model)
        brands[name] = replace(brand, providers=(*live, fallback))
    return replace(config, brands=brands)


def check_credentials(config: Config, env: Mapping[str, str]) -> None:
    """A provider named in a config file whose credentials are missing is a start-up error."""
    for brand in config.brands.values():
        for spec in brand.providers:
            var = PROVIDER_KEY_ENV.get(spec.kind)
            if var and not env.get(var) and not config.provider_options(spec.kind).api_key:
                raise ConfigError(
                    f"brands.{brand.name}.providers: provider {spec} needs credentials: "
                    f"set {var} or providers.{spec.kind}.api_key"
                )


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (or ``$CHATGATE_CONFIG``, or the built-in sample) and validate it."""
    env = os.environ if env is None else env
    path = path or env.get("CHATGATE_CONFIG") or None
    if path is None:
        text = resources.files("gateway").joinpath("sample_config.toml").read_text("utf-8")
        config = parse_config(tomllib.loads(text), env=env, source="built-in sample")
        return _with_sample_chains(config, env)
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {file} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file}: invalid TOML: {exc}") from exc
    config = parse_config(data, env=env, source=str(file))
    check_credentials(config, env)
    return config
