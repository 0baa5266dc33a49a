"""JWT authentication with pinned algorithms.

HS256 with a shared secret, or RS256 with a PEM public key (file) or a JWKS URL. The
algorithm list is fixed by the kind of key we hold: a token that names ``none`` or an
algorithm the key was not made for is refused. Claims: ``sub``, ``brand``, ``plan``,
``exp`` (required), optional ``roles``.

A verified token is remembered (the whole token string, signature included, is the key)
until its ``exp`` or for five minutes, whichever comes first, in a bounded LRU: an
OpenAI-compatible client sends the same bearer token with every request, and checking
its signature again each time was about 2 % of the gateway's CPU per HTTP turn. A token
that fails verification is never remembered.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt
from aiohttp import web

from gateway.config import Config
from gateway.errors import Unauthorized

REQUIRED_CLAIMS = ("sub", "brand", "plan", "exp")
RESERVED_PREFIX = "~"  # internal principals (e.g. the brand-billed summarizer)
VERIFIED_CACHE_SIZE = 4096  # tokens remembered after verification (LRU)
VERIFIED_CACHE_MAX_S = 300.0  # how long at most, however far away their exp is


NO_ROLES: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    user_id: str
    brand: str
    plan: str
    roles: frozenset[str] = NO_ROLES

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class TokenVerifier:
    """Verifies tokens and checks their brand and plan against the config."""

    def __init__(self, config: Config, *, secret: str | None = None,
                 public_key_pem: str | None = None, jwks_url: str | None = None,
                 clock: Callable[[], float] = time.time,
                 cache_size: int = VERIFIED_CACHE_SIZE) -> None:
        self._config = config
        self._clock = clock
        self._cache_size = cache_size
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._jwks: jwt.PyJWKClient | None = None
        self._key: str | None
        if jwks_url:
            self._jwks, self._key, self._algorithms = jwt.PyJWKClient(jwks_url), None, ["RS256"]
        elif public_key_pem:
            self._key, self._algorithms = public_key_pem, ["RS256"]
        elif secret:
            self._key, self._algorithms = secret, ["HS256"]
        else:
            raise ValueError("a JWT secret, public key or JWKS URL is required")

    async def verify_async(self, token: str) -> Principal:
        """Like :meth:`verify`; a JWKS key lookup (HTTP, cached) runs off the event loop."""
        if self._jwks is None:
            return self.verify(token)
        known = self._remembered(token)
        if known is not None:
            return known
        try:
            signing = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        return self._decode(token, signing.key)

    def verify(self, token: str) -> Principal:
        known = self._remembered(token)
        if known is not None:
            return known
        try:
            key = self._jwks.get_signing_key_from_jwt(token).key if self._jwks else self._key
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        return self._decode(token, key)

    def _decode(self, token: str, key: object) -> Principal:
        try:
            claims = jwt.decode(token, key, algorithms=self._algorithms,  # type: ignore[arg-type]
                                options={"require": list(REQUIRED_CLAIMS)})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        principal = self._principal(claims)
        self._remember(token, principal, claims["exp"])
        return principal

    def _remembered(self, token: str) -> Principal | None:
        entry = self._verified.get(token)
        if entry is None:
            return None
        principal, until = entry
        if self._clock() >= until:
            del self._verified[token]
            return None
        self._verified.move_to_end(token)
        return principal

    def _remember(self, token: str, principal: Principal, exp: object) -> None:
        if self._cache_size <= 0 or not isinstance(exp, int | float):
            return
        self._verified[token] = (principal, min(float(exp), self._clock() + VERIFIED_CACHE_MAX_S))
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)

    def _principal(self, claims: dict[str, object]) -> Principal:
        sub, brand, plan = claims.get("sub"), claims.get("brand"), claims.get("plan")
        if not all(isinstance(v, str) and v for v in (sub, brand, plan)):
            raise Unauthorized("token claims sub, brand and plan must be non-empty strings")
        assert isinstance(sub, str) and isinstance(brand, str) and isinstance(plan, str)
        if sub.startswith(RESERVED_PREFIX):
            raise Unauthorized(f"user ids starting with {RESERVED_PREFIX!r} are reserved")
        brand_config, plan_config = self._config.brand(brand), self._config.plan(plan)
        if brand_config is None:
            raise Unauthorized("unknown brand")
        if plan_config is None:
            raise Unauthorized("unknown plan")
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthorized("token claim roles must be a list of strings")
        # The config's own name strings and one shared empty role set: a principal lives as
        # long as its socket, and thousands of idle sockets should not each hold copies.
        return Principal(user_id=sub, brand=brand_config.name, plan=plan_config.name,
                         roles=frozenset(roles) if roles else NO_ROLES)


def token_from_request(request: web.Request, *, allow_query: bool = False) -> str:
    """The bearer token of the ``Authorization`` header, else (for browsers' WebSockets
    only, ``allow_query``) the ``token`` query parameter."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    query = _query_value(request.rel_url.raw_query_string, "token") if allow_query else ""
    if query:
        return query
    raise Unauthorized("missing bearer token")


def _query_value(raw_query: str, name: str) -> str:
    """The first non-empty value of ``name`` in a raw query string, decoded as
    ``request.query`` decodes it; parsed here rather than through ``request.query``, whose
    parse a WebSocket's request keeps for the socket's whole life (about 0.6 KiB of every
    idle socket, measured with tracemalloc)."""
    for key, value in urllib.parse.parse_qsl(raw_query):
        if key == name:
            return value
    return ""


def issue_token(secret: str, *, user: str, brand: str, plan: str = "free", ttl_s: int = 3600,
                roles: list[str] | None = None, now: float | None = None) -> str:
    """An HS256 token for local use and tests (``chatgate token``)."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {"sub": user, "brand": brand, "plan": plan,
                                 "iat": issued, "exp": issued + ttl_s}
    if roles:
        claims["roles"] = roles
    return jwt.encode(claims, secret, algorithm="HS256")


def generate_dev_secret() -> str:
    return secrets.token_urlsafe(32)


def read_public_key(path: str) -> str:
    return Path(path).read_text("utf-8")


DEV_SECRET_PATH = Path(".chatgate/dev-jwt-secret")


def dev_secret(path: Path = DEV_SECRET_PATH) -> tuple[str, bool]:
    """The local dev secret, created (mode 0600) on first use. Returns (secret, created)."""
    if path.exists():
        return path.read_text("utf-8").strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = generate_dev_secret()
    path.touch(mode=0o600)
    path.write_text(secret + "\n", "utf-8")
    return secret, True


def build_verifier(config: Config) -> tuple[TokenVerifier, str | None]:
    """The verifier for the configured key; the HS256 secret when tokens can be issued here."""
    settings = config.settings
    if settings.jwks_url:
        return TokenVerifier(config, jwks_url=settings.jwks_url), None
    if settings.jwt_public_key_file:
        pem = read_public_key(settings.jwt_public_key_file)
        return TokenVerifier(config, public_key_pem=pem), None
    secret = settings.jwt_secret or dev_secret()[0]
    return TokenVerifier(config, secret=secret), secret
