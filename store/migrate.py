"""Bring a records database to the schema this code expects (Alembic, on
both backends), at start and before any report or restore touches it.

Files written by releases before migrations existed have the tables but no
`alembic_version`; the first revision adopts them (it creates only what is
missing and adds the columns they lack), so upgrading is the same path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from store.engine import Database

log = logging.getLogger("ponte.store")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Several nodes may start at once on one PostgreSQL: one migrates, the
# others wait on this advisory lock and then find nothing to do.
LOCK_KEY = 0x706F6E7465  # "ponte"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str:
    """The newest revision this code knows."""
    rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert rev is not None
    return rev


def known(revision: str | None) -> bool:
    """Whether this code can read records at `revision`: its head or older
    (None: a file from before migrations). A newer ponte's revision is unknown."""
    if revision is None:
        return True
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except CommandError:
        return False


def current(db: Database) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database) -> None:
    """Migrate to the newest revision (nothing to do when it is there)."""
    cfg = _config()
    before = current(db)
    if before == head():
        return
    with db.begin() as conn:
        if db.shared:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    log.info("records database %s: schema %s -> %s", db.describe(), before or "new", head())


def open_database(spec: str | Path) -> Database:
    """The records database at `spec` (a path or a URL), at the newest schema."""
    db = Database(spec)
    upgrade(db)
    return db


def as_database(where: Database | str | Path) -> Database:
    """A store's database: given, or opened (and migrated) from a setting."""
    return where if isinstance(where, Database) else open_database(where)
