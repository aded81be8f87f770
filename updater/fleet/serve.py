"""Start the fleet server under uvicorn (httptools + uvloop), one or several processes.

HTTPS with the operator's certificate and key; plain HTTP only when asked for
(``--insecure-http``), and then with a warning, since group tokens, admin
tokens and host credentials would cross the network in clear text.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from cli.errors import UserError


def _check_db(db_url: str) -> None:
    """Open the database once in the parent, so a bad URL fails before any worker starts."""
    from updater.fleet.store import Store

    try:
        Store(db_url).close()
    except Exception as error:  # noqa: BLE001 - sqlite3/psycopg/OS errors alike are the user's to fix
        raise UserError(f"cannot open database {db_url}: {error}") from None


@dataclass(frozen=True)
class Tls:
    """The server's certificate chain and key (PEM files), or neither: plain HTTP."""

    cert: Path | None
    key: Path | None
    insecure_http: bool = False

    def check(self) -> None:
        """Refuse a half or missing TLS setup before any worker starts."""
        if self.insecure_http:
            if self.cert or self.key:
                raise UserError("--insecure-http and --tls-cert/--tls-key exclude each other")
            return
        if not (self.cert and self.key):
            raise UserError(
                "give --tls-cert and --tls-key (HTTPS), or --insecure-http to serve plain HTTP"
            )
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as error:
            raise UserError(
                f"cannot load --tls-cert {self.cert} / --tls-key {self.key}: {error}"
            ) from None

    @property
    def scheme(self) -> str:
        return "http" if self.insecure_http else "https"


def serve(
    config: Path | None,
    db_url: str,
    host: str,
    port: int,
    workers: int,
    test_clock: bool,
    tls: Tls,
) -> int:
    import uvicorn

    from updater.fleet.catalog import Catalog
    from updater.fleet.protocol import REQUEST_TIMEOUT_ENV, GuardedHttpProtocol

    try:
        settings = Catalog(config).current().settings  # settings and targets.json both readable
    except ValueError as error:  # SettingsError included
        raise UserError(str(error)) from None
    tls.check()
    _check_db(db_url)
    if tls.insecure_http:
        print(
            "berth serve: WARNING: plain HTTP (--insecure-http): tokens, host credentials and"
            " lock traffic cross the network unencrypted; use --tls-cert/--tls-key",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"berth serve: {tls.scheme}://{host}:{port} repository {settings.repository}"
        f" database {db_url} groups {', '.join(settings.groups)}"
        f"{' (test clock)' if test_clock else ''}",
        flush=True,
    )
    # Every worker process reads it (spawned workers inherit the environment).
    os.environ[REQUEST_TIMEOUT_ENV] = repr(settings.request_timeout_s)
    options: dict[str, object] = {
        "host": host,
        "port": port,
        "http": GuardedHttpProtocol,
        "loop": "uvloop",
        "access_log": False,
        "log_level": "warning",
        "timeout_keep_alive": 30,
        "limit_concurrency": settings.max_connections,
        "backlog": 4096,
    }
    if not tls.insecure_http:
        options.update(ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key))
    if workers <= 1:
        from updater.fleet.app import create_app

        uvicorn.run(create_app(config, db_url, test_clock=test_clock), **options)  # type: ignore[arg-type]
        return 0
    from updater.fleet.app import SERVE_ENV

    os.environ[SERVE_ENV] = json.dumps(
        {
            "config": str(config.resolve()) if config else None,
            "db": db_url,
            "test_clock": test_clock,
        }
    )
    uvicorn.run("updater.fleet.app:app_from_env", factory=True, workers=workers, **options)  # type: ignore[arg-type]
    return 0
