"""The records database behind one API, on SQLite (the embedded default) or
PostgreSQL (shared by several app-server processes or machines).

SQLAlchemy Core writes the SQL for both dialects; Alembic versions the schema
on both (`store.migrate`). Nothing in this package knows about calls, rooms
or lines: it holds the tables, the engine and the few statements whose SQL
differs between the two backends.
"""

import logging

# Alembic logs at INFO which plugins it set up (on import) and its migration
# context on every start: noise in the server's log. store.migrate says
# itself when it changes a schema.
for _name in ("alembic.runtime.plugins", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)
