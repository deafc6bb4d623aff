"""`python3 -m chirp migrate | worker | health`."""

from __future__ import annotations

import json
import logging
import sys

from chirp.config import Settings, load_env_file


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(argv) != 1 or argv[0] not in ("migrate", "worker", "health"):
        print("usage: python3 -m chirp migrate|worker|health", file=sys.stderr)
        return 2
    load_env_file()
    settings = Settings.from_env()
    if argv[0] == "migrate":
        from chirp.db import Database
        from chirp.migrate import migrate

        applied, version = migrate(Database(settings, statement_timeout_ms=None))
        done = f"applied migration(s) {', '.join(map(str, applied))}" if applied else "nothing to apply"
        print(f"chirp migrate: {done}; schema at version {version}")
        return 0
    if argv[0] == "worker":
        from chirp.worker import run_worker

        run_worker(settings)
        return 0
    from chirp.cache import Cache
    from chirp.db import Database
    from chirp.health import Health

    # One check from a shell: no earlier answer, so a slow database is a failure here (no grace).
    body, status = Health(Database(settings), Cache(settings), settings.release, 0).get()
    print(json.dumps(body, indent=2))
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
