"""``chatgate``: serve the gateway, issue dev tokens, create tables and buckets."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from aiohttp import web

from gateway.auth import build_verifier, dev_secret, issue_token
from gateway.config import Config, ConfigError, load_config
from gateway.gc_policy import tune_for_serving
from gateway.observability import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--config", help="TOML config file (default: $CHATGATE_CONFIG or the "
                                        "built-in sample)")
    serve.add_argument("--lambda", dest="use_lambda", action="store_true",
                       help="serve through the Lambda handlers and a local API Gateway "
                            "WebSocket emulator")
    serve.add_argument("--log-level", default="INFO")
    token = sub.add_parser("token", help="print a JWT signed with the configured secret")
    token.add_argument("--user", required=True)
    token.add_argument("--brand", required=True)
    token.add_argument("--plan", default="free")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default 1 day)")
    token.add_argument("--admin", action="store_true", help="add the admin role")
    token.add_argument("--config")
    init = sub.add_parser("init", help="create the configured DynamoDB table(s) and S3 bucket")
    init.add_argument("--config")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"chatgate: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(config, args)
    if args.command == "token":
        return _token(config, args)
    return asyncio.run(_init(config))


def _describe(config: Config) -> list[str]:
    s = config.settings
    lines = [f"config: {config.source}",
             f"redis: {s.redis_url}" + (" (embedded, in-process)" if s.redis_url ==
                                        "memory://" else ""),
             f"history: {s.history_url}", f"archive: {s.archive_url or 'off'}"]
    for brand in config.brands.values():
        lines.append(f"brand {brand.name}: " + " -> ".join(str(p) for p in brand.providers))
    return lines


def _serve(config: Config, args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    embedded = config.settings.redis_url.startswith("memory://")
    print("chatgate: " + ("running on embedded defaults (no services needed)" if embedded
                          else "running against configured services"), file=sys.stderr)
    for line in _describe(config):
        print(f"  {line}", file=sys.stderr)
    _, secret = build_verifier(config)
    if secret is not None and not config.settings.jwt_secret:
        print(f"  dev JWT secret (HS256, stored in .chatgate/dev-jwt-secret): {secret}",
              file=sys.stderr)
    print("  get a token:  chatgate token --user alice --brand growain", file=sys.stderr)
    print(f"  connect:      ws://{args.host}:{args.port}/v1/ws?token=TOKEN", file=sys.stderr)
    if args.use_lambda:
        from deploy.local import create_lambda_app

        app = create_lambda_app(config)
    else:
        from gateway.app import create_app

        app = create_app(config)
    app.on_startup.append(_tune_gc)  # after the runtime has opened (cleanup_ctx runs first)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None,
                loop=new_event_loop())
    return 0


async def _tune_gc(app: web.Application) -> None:
    tune_for_serving()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (a faster loop for the same asyncio code)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _token(config: Config, args: argparse.Namespace) -> int:
    if config.settings.jwt_public_key_file or config.settings.jwks_url:
        print("chatgate: tokens for RS256 keys are issued by your identity provider",
              file=sys.stderr)
        return 2
    if config.brand(args.brand) is None:
        print(f"chatgate: unknown brand {args.brand!r} (known: "
              f"{', '.join(config.brands)})", file=sys.stderr)
        return 2
    if config.plan(args.plan) is None:
        print(f"chatgate: unknown plan {args.plan!r} (known: {', '.join(config.plans)})",
              file=sys.stderr)
        return 2
    secret = config.settings.jwt_secret or dev_secret()[0]
    print(issue_token(secret, user=args.user, brand=args.brand, plan=args.plan,
                      ttl_s=args.ttl, roles=["admin"] if args.admin else None))
    return 0


async def _init(config: Config) -> int:
    from memory.cold import open_archive
    from memory.warm import open_history

    history = await open_history(config.settings.history_url)
    try:
        await history.ensure_schema()
        print(f"history ready: {config.settings.history_url}")
    finally:
        await history.aclose()
    archive = await open_archive(config.settings.archive_url)
    if archive is not None:
        try:
            await archive.ensure_bucket()
            print(f"archive ready: {config.settings.archive_url}")
        finally:
            await archive.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
