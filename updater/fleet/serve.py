"""Start the fleet server under uvicorn (httptools + uvloop), one or several processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cli.errors import UserError


def _check_db(db_url: str) -> None:
    """Open the database once in the parent, so a bad URL fails before any worker starts."""
    from updater.fleet.store import Store

    try:
        Store(db_url).close()
    except Exception as error:  # noqa: BLE001 - sqlite3/psycopg/OS errors alike are the user's to fix
        raise UserError(f"cannot open database {db_url}: {error}") from None


def serve(
    config: Path | None, db_url: str, host: str, port: int, workers: int, test_clock: bool
) -> int:
    import uvicorn

    from updater.fleet.catalog import Catalog

    try:
        settings = Catalog(config).current().settings  # settings and targets.json both readable
    except ValueError as error:  # SettingsError included
        raise UserError(str(error)) from None
    _check_db(db_url)
    print(
        f"berth serve: http://{host}:{port} repository {settings.repository} database {db_url}"
        f" groups {', '.join(settings.groups)}{' (test clock)' if test_clock else ''}",
        flush=True,
    )
    options = {
        "host": host,
        "port": port,
        "http": "httptools",
        "loop": "uvloop",
        "access_log": False,
        "log_level": "warning",
        "timeout_keep_alive": 30,
        "backlog": 4096,
    }
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
