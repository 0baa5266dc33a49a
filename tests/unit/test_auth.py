"""JWT verification with pinned algorithms, claim checks and token extraction."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import jwt
import orjson
import pytest
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth import Principal, TokenVerifier, issue_token, token_from_request
from gateway.config import Config, load_config
from gateway.errors import Unauthorized

SECRET = "test-secret-" + "s" * 60  # 72 bytes: long enough for HS512 too


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(env={})


@pytest.fixture(scope="module")
def rsa_pems() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture
def verifier(config: Config) -> TokenVerifier:
    return TokenVerifier(config, secret=SECRET)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "brand": "growain", "plan": "free",
                            "exp": int(time.time()) + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hand_signed(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A compact JWS built by hand, HMAC-SHA256 signed with ``key`` (or unsigned)."""
    signing_input = f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(payload))}"
    if key is None:
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def refused(verifier: TokenVerifier, token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        verifier.verify(token)
    assert info.value.code == "unauthorized"
    return info.value


# --- HS256 -------------------------------------------------------------------------------


def test_issued_token_is_accepted(verifier: TokenVerifier) -> None:
    token = issue_token(SECRET, user="alice", brand="growain", plan="professional")
    assert verifier.verify(token) == Principal(user_id="alice", brand="growain",
                                               plan="professional")


def test_issued_token_with_admin_role(verifier: TokenVerifier) -> None:
    principal = verifier.verify(issue_token(SECRET, user="root", brand="corefinops",
                                            roles=["admin"]))
    assert principal.roles == frozenset({"admin"})
    assert principal.is_admin


def test_token_without_roles_is_not_admin(verifier: TokenVerifier) -> None:
    principal = verifier.verify(issue_token(SECRET, user="alice", brand="growain"))
    assert principal.roles == frozenset()
    assert not principal.is_admin


def test_expired_token_is_refused(verifier: TokenVerifier) -> None:
    token = issue_token(SECRET, user="alice", brand="growain", ttl_s=60,
                        now=time.time() - 3600)
    assert "expired" in refused(verifier, token).message


def test_wrong_secret_is_refused(verifier: TokenVerifier) -> None:
    token = issue_token("another-secret-of-sufficient-length!!", user="alice", brand="growain")
    assert refused(verifier, token).message == "invalid token"


def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    token = hand_signed({"alg": "none", "typ": "JWT"}, claims(), None)
    assert refused(verifier, token).message == "invalid token"


def test_hand_signed_hs256_control_is_accepted(verifier: TokenVerifier) -> None:
    # Shows hand_signed builds valid tokens, so the refusals above and below are about
    # the algorithm and key, not a malformed token.
    token = hand_signed({"alg": "HS256", "typ": "JWT"}, claims(), SECRET.encode())
    assert verifier.verify(token).user_id == "alice"


def test_other_hmac_algorithm_is_refused(verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS512")
    refused(verifier, token)


def test_rs256_token_is_refused_by_an_hs256_verifier(
    verifier: TokenVerifier, rsa_pems: tuple[str, str]
) -> None:
    private, _ = rsa_pems
    refused(verifier, jwt.encode(claims(), private, algorithm="RS256"))


def test_unknown_brand_is_refused(verifier: TokenVerifier) -> None:
    token = issue_token(SECRET, user="alice", brand="evilcorp")
    assert refused(verifier, token).message == "unknown brand"


def test_unknown_plan_is_refused(verifier: TokenVerifier) -> None:
    token = issue_token(SECRET, user="alice", brand="growain", plan="platinum")
    assert refused(verifier, token).message == "unknown plan"


@pytest.mark.parametrize("missing", ["sub", "brand", "plan", "exp"])
def test_missing_claim_is_refused(verifier: TokenVerifier, missing: str) -> None:
    token = jwt.encode(claims(**{missing: None}), SECRET, algorithm="HS256")
    refused(verifier, token)


@pytest.mark.parametrize("claim", ["sub", "brand", "plan"])
@pytest.mark.parametrize("value", ["", 42, ["growain"]])
def test_empty_or_non_string_identity_claim_is_refused(
    verifier: TokenVerifier, claim: str, value: Any
) -> None:
    token = jwt.encode(claims(**{claim: value}), SECRET, algorithm="HS256")
    refused(verifier, token)


@pytest.mark.parametrize("roles", ["admin", {"admin": True}, [1], ["admin", None]])
def test_roles_that_are_not_a_list_of_strings_are_refused(
    verifier: TokenVerifier, roles: Any
) -> None:
    token = jwt.encode(claims(roles=roles), SECRET, algorithm="HS256")
    assert "roles" in refused(verifier, token).message


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x"])
def test_garbage_is_refused(verifier: TokenVerifier, garbage: str) -> None:
    refused(verifier, garbage)


def test_verifier_needs_a_key(config: Config) -> None:
    with pytest.raises(ValueError):
        TokenVerifier(config)


# --- RS256 -------------------------------------------------------------------------------


def test_rs256_with_generated_key_pair(config: Config, rsa_pems: tuple[str, str]) -> None:
    private, public = rsa_pems
    verifier = TokenVerifier(config, public_key_pem=public)
    token = jwt.encode(claims(roles=["admin"]), private, algorithm="RS256")
    principal = verifier.verify(token)
    assert (principal.user_id, principal.brand, principal.plan) == ("alice", "growain", "free")
    assert principal.is_admin


def test_rs256_signed_by_another_key_is_refused(config: Config, rsa_pems: tuple[str, str]
                                                ) -> None:
    _, public = rsa_pems
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verifier = TokenVerifier(config, public_key_pem=public)
    refused(verifier, jwt.encode(claims(), other, algorithm="RS256"))


def test_hs256_signed_with_the_public_key_is_refused_by_rs256_verifier(
    config: Config, rsa_pems: tuple[str, str]
) -> None:
    """The key-confusion attack: HMAC-sign with the PEM public key as the shared secret."""
    _, public = rsa_pems
    verifier = TokenVerifier(config, public_key_pem=public)
    token = hand_signed({"alg": "HS256", "typ": "JWT"}, claims(), public.encode())
    assert refused(verifier, token).message == "invalid token"


def test_alg_none_is_refused_by_rs256_verifier(config: Config, rsa_pems: tuple[str, str]
                                               ) -> None:
    _, public = rsa_pems
    verifier = TokenVerifier(config, public_key_pem=public)
    refused(verifier, hand_signed({"alg": "none"}, claims(), None))


# --- token_from_request ------------------------------------------------------------------


def test_bearer_header_is_preferred_over_query() -> None:
    request = make_mocked_request("GET", "/v1/ws?token=from-query",
                                  headers={"Authorization": "Bearer from-header"})
    assert token_from_request(request, allow_query=True) == "from-header"


def test_bearer_scheme_is_case_insensitive() -> None:
    request = make_mocked_request("GET", "/v1/ws", headers={"Authorization": "bearer tok"})
    assert token_from_request(request) == "tok"


def test_query_token_when_no_header() -> None:
    request = make_mocked_request("GET", "/v1/ws?token=from-query")
    assert token_from_request(request, allow_query=True) == "from-query"


@pytest.mark.parametrize(("query", "expected"), [
    ("?lang=en&token=a.b.c&x=1", "a.b.c"), ("?token=a%2Eb%2Ec", "a.b.c"),
    ("?token=&token=second", "second"), ("?tokens=no&token=yes", "yes")])
def test_query_token_is_the_first_non_empty_one_percent_decoded(query: str,
                                                                 expected: str) -> None:
    request = make_mocked_request("GET", f"/v1/ws{query}")
    assert token_from_request(request, allow_query=True) == expected


def test_query_token_is_refused_where_not_allowed() -> None:
    """Only the browser WebSocket may carry its token in the URL (it ends up in logs)."""
    request = make_mocked_request("GET", "/v1/usage?token=from-query")
    with pytest.raises(Unauthorized):
        token_from_request(request)


@pytest.mark.parametrize("header", ["Basic dXNlcjpwdw==", "Bearer ", "Bearer", "tok"])
def test_query_token_when_header_is_not_a_usable_bearer(header: str) -> None:
    request = make_mocked_request("GET", "/v1/ws?token=from-query",
                                  headers={"Authorization": header})
    assert token_from_request(request, allow_query=True) == "from-query"


def test_no_token_is_unauthorized() -> None:
    request = make_mocked_request("GET", "/v1/ws?token=")
    with pytest.raises(Unauthorized):
        token_from_request(request, allow_query=True)


def test_reserved_internal_user_ids_are_refused() -> None:
    from gateway.config import load_config

    verifier = TokenVerifier(load_config(env={}), secret="s" * 32)
    with pytest.raises(Unauthorized):
        verifier.verify(issue_token("s" * 32, user="~summarizer", brand="growain"))


class CountingDecode:
    """Counts PyJWT's signature checks (the library's own decode underneath)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = jwt.decode

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr("gateway.auth.jwt.decode", counted)


def test_a_verified_token_is_not_checked_again_until_it_expires(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = CountingDecode(monkeypatch)
    now = [time.time()]
    verifier = TokenVerifier(config, secret=SECRET, clock=lambda: now[0])
    exp = int(now[0]) + 120
    token = jwt.encode(claims(exp=exp), SECRET, algorithm="HS256")
    first = verifier.verify(token)
    assert verifier.verify(token) == first
    assert decodes.calls == 1
    now[0] = exp  # at its exp the remembered entry is no longer used: PyJWT checks again
    verifier.verify(token)  # (PyJWT's own clock is real time: the token is still valid)
    assert decodes.calls == 2


def test_remembering_is_capped_at_five_minutes(config: Config,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = CountingDecode(monkeypatch)
    now = [time.time()]
    verifier = TokenVerifier(config, secret=SECRET, clock=lambda: now[0])
    token = jwt.encode(claims(exp=int(now[0]) + 86_400), SECRET, algorithm="HS256")
    verifier.verify(token)
    now[0] += 299
    verifier.verify(token)
    assert decodes.calls == 1
    now[0] += 2
    verifier.verify(token)
    assert decodes.calls == 2


def test_failed_tokens_are_not_remembered(verifier: TokenVerifier,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = CountingDecode(monkeypatch)
    forged = jwt.encode(claims(), "another-secret-" + "x" * 40, algorithm="HS256")
    for _ in range(2):
        with pytest.raises(Unauthorized):
            verifier.verify(forged)
    assert decodes.calls == 2


def test_the_remembered_tokens_are_bounded_least_recently_used_first(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = CountingDecode(monkeypatch)
    verifier = TokenVerifier(config, secret=SECRET, cache_size=2)
    a, b, c = (jwt.encode(claims(sub=user), SECRET, algorithm="HS256") for user in "abc")
    assert [verifier.verify(t).user_id for t in (a, b, a, c)] == ["a", "b", "a", "c"]
    assert decodes.calls == 3  # a, b, c; the second a was remembered
    verifier.verify(a)  # still there (used after b)
    assert decodes.calls == 3
    verifier.verify(b)  # evicted by c
    assert decodes.calls == 4
