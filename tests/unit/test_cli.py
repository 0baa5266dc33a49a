from pathlib import Path

import pytest

from gateway.auth import TokenVerifier
from gateway.cli import main
from gateway.config import load_config


def test_token_prints_a_verifiable_token(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CHATGATE_JWT_SECRET", "cli-test-secret-" + "x" * 24)
    assert main(["token", "--user", "alice", "--brand", "growain", "--plan", "professional",
                 "--admin"]) == 0
    token = capsys.readouterr().out.strip()
    principal = TokenVerifier(load_config(), secret="cli-test-secret-" + "x" * 24).verify(token)
    assert (principal.user_id, principal.brand, principal.plan) == (
        "alice", "growain", "professional")
    assert principal.is_admin


def test_token_for_an_unknown_brand_is_refused(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CHATGATE_JWT_SECRET", "s" * 32)
    assert main(["token", "--user", "a", "--brand", "nope"]) == 2
    assert "unknown brand 'nope'" in capsys.readouterr().err


def test_a_bad_config_file_names_the_key(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[plans.free]\ntokens_per_day = "lots"\n')
    assert main(["token", "--user", "a", "--brand", "b", "--config", str(config)]) == 2
    assert "plans.free.tokens_per_day" in capsys.readouterr().err


def test_a_provider_without_credentials_is_a_startup_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = tmp_path / "gateway.toml"
    config.write_text("""
[plans.free]
tokens_per_day = 10
tokens_per_month = 10
max_context_window = 1000
history_ttl_days = 1
[brands.acme]
providers = ["openai:gpt-4o-mini"]
""")
    assert main(["serve", "--config", str(config)]) == 2
    assert "openai:gpt-4o-mini needs credentials" in capsys.readouterr().err
