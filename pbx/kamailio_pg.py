"""Kamailio's subscribers in PostgreSQL, when ponte's `database` is a PostgreSQL URL.

Every edge's auth_db then reads one `subscriber` table (per request, no
cache), so a password changed in the YAML and reloaded on one node reaches
every Kamailio on that database. The table is Kamailio's own (created from
/usr/share/kamailio/postgres, with its `version` row); neither name is one of
ponte's tables, so both live in the database's default schema beside them.

Only the subscribers move: registrations (usrloc), the trunk table (htable)
and acc's history stay in this edge's SQLite files (pbx/kamailio.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from provisioning.schema import Extension

PG_SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://")
SCHEMA_DIR = Path("/usr/share/kamailio/postgres")  # kamailio-postgres-modules
# Key of the transaction-scoped advisory lock that serializes the edges'
# writes of the table: two nodes reloading at once take turns instead of
# one's DELETE missing the other's fresh rows (a duplicate-key error).
LOCK_KEY = 0x706F6E7465  # "ponte"
CONNECT_TIMEOUT = 5  # s: an unreachable server is an error, not a hang


class SubscriberStoreError(Exception):
    """PostgreSQL is unreachable, refused us, or its URL does not suit Kamailio."""


def postgres_url(database: object) -> str | None:
    """ponte's `database` setting when it names PostgreSQL, else None (a SQLite file)."""
    url = str(database)
    return url if url.startswith(PG_SCHEMES) else None


def libpq_url(url: str) -> str:
    """The URL as libpq (psycopg) takes it: scheme `postgresql://`."""
    return "postgresql://" + url.split("://", 1)[1]


def kamailio_url(url: str) -> str:
    """Kamailio's form, `postgres://USER:PASSWORD@HOST:PORT/DB`.

    Kamailio's parser decodes nothing and takes no options, so the parts are
    written decoded; characters it would misread are refused here. Options
    after `?` (sslmode…) do not reach Kamailio: libpq's PG* environment
    variables (PGSSLMODE…) and ~/.pgpass apply to it as usual.
    """
    parts = urlsplit(libpq_url(url))
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    host, database = parts.hostname or "", unquote(parts.path.lstrip("/"))
    if not host or not database:
        raise SubscriberStoreError(
            f"{redact(url)}: Kamailio reaches PostgreSQL over TCP: name the host and the database"
        )
    unsafe = {
        "user": (user, ':@/"\\'),
        "password": (password, '/"\\'),
        "database": (database, '"\\'),
    }
    for what, (value, bad) in unsafe.items():
        if any(c in bad or not c.isprintable() for c in value):
            raise SubscriberStoreError(f"{redact(url)}: Kamailio cannot read this {what}")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    port = f":{parts.port}" if parts.port else ""
    return f"postgres://{auth}{host}{port}/{database}"


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def sync_subscribers(url: str, extensions: list[Extension]) -> None:
    """Make PostgreSQL's subscriber table hold exactly these extensions, in one
    transaction (Kamailio's `version` and `subscriber` tables are created
    first if missing). Readers see the old rows or the new, never a gap."""
    import psycopg

    try:
        with psycopg.connect(libpq_url(url), connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            for table, script in (("version", "standard"), ("subscriber", "auth_db")):
                if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                    conn.execute((SCHEMA_DIR / f"{script}-create.sql").read_text().encode())
            conn.execute("DELETE FROM subscriber")
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO subscriber (username, domain, password) VALUES (%s, '', %s)",
                    [(e.number, e.password) for e in extensions],
                )
    except psycopg.Error as exc:
        raise SubscriberStoreError(
            f"Kamailio's subscribers not written to {redact(url)}: {exc}".strip()
        ) from exc
    except FileNotFoundError as exc:
        raise SubscriberStoreError(
            f"Kamailio's PostgreSQL schema missing ({exc.filename}): "
            "install kamailio-postgres-modules (scripts/setup)"
        ) from exc
