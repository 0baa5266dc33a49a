"""Configuration: the built-in sample's numbers, validation errors that name the key,
environment overrides and mock-settings resolution."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config import (
    Config,
    ConfigError,
    Limits,
    MockSettings,
    ProviderSpec,
    Settings,
    load_config,
)

MINIMAL = """
[plans.free]
tokens_per_day = 5000
tokens_per_month = 100000
max_context_window = 4000
history_ttl_days = 7

[brands.acme]
providers = ["mock:mock-1"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chatgate.toml"
    path.write_text(textwrap.dedent(text), "utf-8")
    return path


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), env=env or {})


# --- the built-in sample -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "day", "month", "window", "ttl_days", "archive"),
    [
        ("free", 5000, 100_000, 4000, 7, False),
        ("professional", 50_000, 1_000_000, 8000, 90, False),
        ("enterprise", -1, -1, 32_000, 90, True),
    ],
)
def test_sample_plans_have_the_design_numbers(
    name: str, day: int, month: int, window: int, ttl_days: int, archive: bool
) -> None:
    plan = load_config(env={}).plan(name)
    assert plan is not None
    assert (plan.tokens_per_day, plan.tokens_per_month, plan.max_context_window,
            plan.history_ttl_days, plan.archive) == (day, month, window, ttl_days, archive)


@pytest.mark.parametrize(
    ("name", "per_conversation", "monthly", "threshold"),
    [
        ("growain", 5000, 50_000_000, 0.8),
        ("mindagain", 8000, 30_000_000, 0.75),
        ("corefinops", 2000, 15_000_000, 0.85),
    ],
)
def test_sample_brands_have_the_design_numbers(
    name: str, per_conversation: int, monthly: int, threshold: float
) -> None:
    brand = load_config(env={}).brand(name)
    assert brand is not None
    assert brand.tokens_per_conversation == per_conversation
    assert brand.monthly_budget == monthly
    assert brand.alert_threshold == pytest.approx(threshold)
    assert brand.requests_per_minute_per_user == 60
    assert brand.requests_per_second_per_brand == 500


def test_sample_growain_has_the_design_prompt_and_cache() -> None:
    growain = load_config(env={}).brands["growain"]
    assert growain.system_prompt == "You are Growain's marketing assistant."
    assert growain.cache == "brand"
    assert growain.cache_ttl_s == 3600


def test_sample_pricing_has_gpt_4o_mini() -> None:
    price = load_config(env={}).price("gpt-4o-mini")
    assert price is not None
    assert price.input == pytest.approx(0.15)
    assert price.output == pytest.approx(0.60)


def test_sample_without_provider_keys_answers_with_mock_only() -> None:
    config = load_config(env={})
    assert config.source == "built-in sample"
    for brand in config.brands.values():
        assert [spec.kind for spec in brand.providers] == ["mock"]


def test_sample_with_openai_key_leads_with_openai_then_mock() -> None:
    config = load_config(env={"OPENAI_API_KEY": "sk-test"})
    for brand in config.brands.values():
        kinds = [spec.kind for spec in brand.providers]
        assert kinds == ["openai", "mock"], brand.name
    assert config.brands["growain"].providers[0] == ProviderSpec("openai", "gpt-4o-mini")


def test_sample_with_both_keys_keeps_the_brand_order_then_mock() -> None:
    config = load_config(env={"OPENAI_API_KEY": "sk", "ANTHROPIC_API_KEY": "ak"})
    assert [s.kind for s in config.brands["growain"].providers] == ["openai", "anthropic", "mock"]
    assert [s.kind for s in config.brands["mindagain"].providers] == [
        "anthropic", "openai", "mock"]


def test_sample_ignores_an_empty_openai_key() -> None:
    config = load_config(env={"OPENAI_API_KEY": ""})
    assert [s.kind for s in config.brands["growain"].providers] == ["mock"]


def test_sample_defaults_for_settings_and_limits() -> None:
    config = load_config(env={})
    assert config.settings == Settings()
    assert config.settings.redis_url == "memory://"
    assert config.limits == Limits()


def test_chatgate_config_env_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    config = load_config(env={"CHATGATE_CONFIG": str(path)})
    assert config.source == str(path)
    assert set(config.brands) == {"acme"}


# --- bad files ---------------------------------------------------------------------------


def test_minimal_file_loads(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL)
    assert config.brands["acme"].providers == (ProviderSpec("mock", "mock-1"),)


@pytest.mark.parametrize(
    ("extra", "named_key"),
    [
        ("[gateway]\nmax_frame_byte = 1000\n", "gateway.max_frame_byte"),
        ("[settings]\nredis = 'redis://x'\n", "settings.redis"),
        ("[providers.openai]\nkey = 'x'\n", "providers.openai.key"),
        ("[extras]\na = 1\n", "(top level).extras"),
    ],
)
def test_unknown_key_is_named(tmp_path: Path, extra: str, named_key: str) -> None:
    with pytest.raises(ConfigError, match=r"unknown key") as info:
        load_text(tmp_path, MINIMAL + extra)
    assert named_key in str(info.value)


def test_unknown_brand_key_is_named(tmp_path: Path) -> None:
    text = MINIMAL + "colour = 'red'\n"  # appended to [brands.acme]
    with pytest.raises(ConfigError, match=r"brands\.acme\.colour: unknown key"):
        load_text(tmp_path, text)


def test_unknown_plan_key_is_named(tmp_path: Path) -> None:
    text = MINIMAL.replace("history_ttl_days = 7", "history_ttl_days = 7\nseats = 3")
    with pytest.raises(ConfigError, match=r"plans\.free\.seats: unknown key"):
        load_text(tmp_path, text)


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        ("tokens_per_day = 5000", 'tokens_per_day = "5000"',
         r"plans\.free\.tokens_per_day: must be an integer"),
        ("tokens_per_day = 5000", "tokens_per_day = 5000.0",
         r"plans\.free\.tokens_per_day: must be an integer"),
        ("tokens_per_day = 5000", "tokens_per_day = true",
         r"plans\.free\.tokens_per_day: must be an integer"),
        ("history_ttl_days = 7", "history_ttl_days = 7\narchive = 'yes'",
         r"plans\.free\.archive: must be true or false"),
        ('providers = ["mock:mock-1"]', 'providers = "mock:mock-1"',
         r"brands\.acme\.providers: must be a non-empty list"),
        ('providers = ["mock:mock-1"]', "providers = []",
         r"brands\.acme\.providers: must be a non-empty list"),
        ('providers = ["mock:mock-1"]', 'providers = ["mock:mock-1"]\nalert_threshold = "high"',
         r"brands\.acme\.alert_threshold: must be a number"),
        ('providers = ["mock:mock-1"]', 'providers = ["mock:mock-1"]\nsystem_prompt = 3',
         r"brands\.acme\.system_prompt: must be a string"),
        ('providers = ["mock:mock-1"]', 'providers = ["mock:mock-1"]\ncache = "global"',
         r"brands\.acme\.cache: must be 'brand', 'user' or 'off'"),
    ],
)
def test_wrong_type_is_named(tmp_path: Path, old: str, new: str, pattern: str) -> None:
    assert old in MINIMAL
    with pytest.raises(ConfigError, match=pattern):
        load_text(tmp_path, MINIMAL.replace(old, new))


def test_brand_mock_that_is_not_a_table_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"brands\.acme\.mock"):
        load_text(tmp_path, MINIMAL + "mock = 5\n")


def test_plan_that_is_not_a_table_is_named(tmp_path: Path) -> None:
    text = MINIMAL.replace("[plans.free]", "[plans]\npro = 5\n[plans.free]")
    with pytest.raises(ConfigError, match=r"plans\.pro: must be a table"):
        load_text(tmp_path, text)


@pytest.mark.parametrize("value", [-2, -100])
def test_negative_limit_other_than_unlimited_is_refused(tmp_path: Path, value: int) -> None:
    text = MINIMAL.replace("tokens_per_day = 5000", f"tokens_per_day = {value}")
    with pytest.raises(ConfigError, match=r"plans\.free\.tokens_per_day: must be >= 0"):
        load_text(tmp_path, text)


def test_minus_one_means_unlimited(tmp_path: Path) -> None:
    text = MINIMAL.replace("tokens_per_day = 5000", "tokens_per_day = -1") + (
        "monthly_budget = -1\ntokens_per_conversation = -1\n")
    config = load_text(tmp_path, text)
    assert config.plans["free"].tokens_per_day == -1
    assert config.brands["acme"].monthly_budget == -1
    assert config.brands["acme"].tokens_per_conversation == -1


def test_negative_brand_budget_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"brands\.acme\.monthly_budget: must be >= 1"):
        load_text(tmp_path, MINIMAL + "monthly_budget = -5\n")


@pytest.mark.parametrize("value", ["1.01", "2", "-0.1"])
def test_alert_threshold_outside_zero_to_one_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"brands\.acme\.alert_threshold: must be between"):
        load_text(tmp_path, MINIMAL + f"alert_threshold = {value}\n")


def test_alert_threshold_of_one_is_allowed(tmp_path: Path) -> None:
    assert load_text(tmp_path, MINIMAL + "alert_threshold = 1\n").brands[
        "acme"].alert_threshold == 1.0


def test_alert_threshold_nan_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"brands\.acme\.alert_threshold"):
        load_text(tmp_path, MINIMAL + "alert_threshold = nan\n")


@pytest.mark.parametrize("spec", ["foo", "foo:bar", "openai:", ":gpt-4o"])
def test_bad_provider_spec_is_named(tmp_path: Path, spec: str) -> None:
    text = MINIMAL.replace('"mock:mock-1"', f'"{spec}"')
    with pytest.raises(ConfigError, match=r"brands\.acme\.providers: ") as info:
        load_text(tmp_path, text)
    assert repr(spec) in str(info.value)


def test_unknown_provider_options_table_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"providers\.cohere: unknown provider"):
        load_text(tmp_path, MINIMAL + "[providers.cohere]\nbase_url = 'x'\n")


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[plans.free\ntokens_per_day = ")
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        load_config(path, env={})
    assert str(path) in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config(path, env={})
    assert str(path) in str(info.value)


def test_file_without_plans_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"plans: at least one plan"):
        load_text(tmp_path, "[brands.acme]\n")


def test_file_without_brands_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.split("[brands.acme]")[0]
    with pytest.raises(ConfigError, match=r"brands: at least one brand"):
        load_text(tmp_path, text)


# --- credentials -------------------------------------------------------------------------


def test_file_naming_openai_without_key_is_a_startup_error(tmp_path: Path) -> None:
    text = MINIMAL.replace('"mock:mock-1"', '"openai:gpt-4o-mini"')
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert "openai:gpt-4o-mini" in message
    assert "OPENAI_API_KEY" in message
    assert "brands.acme.providers" in message


def test_file_naming_anthropic_without_key_names_its_variable(tmp_path: Path) -> None:
    text = MINIMAL.replace('"mock:mock-1"', '"mock:m", "anthropic:claude-3-5-haiku-latest"')
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        load_text(tmp_path, text)


def test_file_naming_openai_with_env_key_loads(tmp_path: Path) -> None:
    text = MINIMAL.replace('"mock:mock-1"', '"openai:gpt-4o-mini"')
    config = load_text(tmp_path, text, env={"OPENAI_API_KEY": "sk-test"})
    # A config file's chain is used as written: no mock fallback is added.
    assert config.brands["acme"].providers == (ProviderSpec("openai", "gpt-4o-mini"),)


def test_file_naming_openai_with_api_key_option_loads(tmp_path: Path) -> None:
    text = MINIMAL.replace('"mock:mock-1"', '"openai:gpt-4o-mini"') + (
        "[providers.openai]\napi_key = 'sk-file'\n")
    config = load_text(tmp_path, text)
    assert config.provider_options("openai").api_key == "sk-file"


# --- settings and limits -----------------------------------------------------------------


SETTINGS = MINIMAL + """
[settings]
redis_url = "redis://file:6379/0"
history_url = "sqlite:///file.db"
jwt_secret = "from-file"
"""


def test_settings_table_is_read(tmp_path: Path) -> None:
    settings = load_text(tmp_path, SETTINGS).settings
    assert settings.redis_url == "redis://file:6379/0"
    assert settings.history_url == "sqlite:///file.db"
    assert settings.jwt_secret == "from-file"
    assert settings.archive_url == Settings().archive_url


def test_chatgate_env_overrides_the_settings_table(tmp_path: Path) -> None:
    env = {"CHATGATE_REDIS_URL": "redis://env:6379/1", "CHATGATE_JWT_SECRET": "from-env",
           "CHATGATE_ARCHIVE_URL": ""}
    settings = load_text(tmp_path, SETTINGS, env=env).settings
    assert settings.redis_url == "redis://env:6379/1"
    assert settings.jwt_secret == "from-env"
    assert settings.archive_url == ""  # empty: archive off
    assert settings.history_url == "sqlite:///file.db"  # not overridden


def test_chatgate_env_overrides_the_sample_defaults() -> None:
    config = load_config(env={"CHATGATE_JWKS_URL": "https://idp/jwks.json"})
    assert config.settings.jwks_url == "https://idp/jwks.json"


def test_settings_wrong_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"settings\.redis_url: must be a string"):
        load_text(tmp_path, MINIMAL + "[settings]\nredis_url = 6379\n")


def test_gateway_limits_are_read_and_defaults_kept(tmp_path: Path) -> None:
    text = MINIMAL + "[gateway]\nmax_message_chars = 100\ndefault_max_tokens = 64\n" \
                     "heartbeat_s = 5\n"
    limits = load_text(tmp_path, text).limits
    assert limits.max_message_chars == 100
    assert limits.default_max_tokens == 64
    assert limits.heartbeat_s == 5.0
    assert limits.hot_ttl_s == Limits().hot_ttl_s


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("max_frame_bytes = 100", r"gateway\.max_frame_bytes: must be >= 256"),
        ("default_max_tokens = 0", r"gateway\.default_max_tokens: must be >= 1"),
        ("hot_messages = 1", r"gateway\.hot_messages: must be >= 2"),
        ("heartbeat_s = 0.5", r"gateway\.heartbeat_s: must be >= 1"),
        ("max_chats_per_socket = 'many'", r"gateway\.max_chats_per_socket: must be an integer"),
    ],
)
def test_gateway_limits_are_validated(tmp_path: Path, line: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_text(tmp_path, MINIMAL + f"[gateway]\n{line}\n")


# --- mock settings -----------------------------------------------------------------------


MOCKS = MINIMAL + """
[brands.acme.mock]
answer_tokens = 3

[brands.plain]
providers = ["mock:mock-1"]

[mock]
answer_tokens = 10
token_delay_ms = 2

[mock.models."fast"]
answer_tokens = 5
"""


def test_mock_settings_brand_wins_over_model(tmp_path: Path) -> None:
    config = load_text(tmp_path, MOCKS)
    settings = config.mock_settings("acme", "fast")
    assert settings.answer_tokens == 3
    assert settings.token_delay_ms == 2.0  # unspecified fields come from [mock]


def test_mock_settings_model_wins_over_default(tmp_path: Path) -> None:
    config = load_text(tmp_path, MOCKS)
    assert config.mock_settings("plain", "fast") == MockSettings(answer_tokens=5,
                                                                 token_delay_ms=2.0)


def test_mock_settings_default_otherwise(tmp_path: Path) -> None:
    config = load_text(tmp_path, MOCKS)
    assert config.mock_settings("plain", "other") == MockSettings(answer_tokens=10,
                                                                  token_delay_ms=2.0)
    assert config.mock_settings("no-such-brand", "other") == config.mock


def test_mock_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'mock\.models\."fast"\.answer_tokens: must be >= 1'):
        load_text(tmp_path, MOCKS.replace("answer_tokens = 5", "answer_tokens = 0"))
