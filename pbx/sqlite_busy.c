/* A busy timeout for every SQLite connection of the process it is preloaded
 * into (LD_PRELOAD): Kamailio, whose db_sqlite (5.6) sets none.
 *
 * Without one, a write that meets another writer's lock fails at once with
 * "database is locked": two of Kamailio's workers writing acc's file at the
 * same moment (two calls ending together), or ponte and Kamailio both
 * writing the registrations' file, and a call's history row was lost
 * (tests/test_acc_contention_calls.py). With it the write waits for the lock,
 * as ponte's own connections do. Later Kamailio has db_set_busy_timeout.
 *
 * SQLite runs each auto extension on every connection opened after it is
 * registered; this library registers one from its constructor, before
 * Kamailio loads db_sqlite. PONTE_SQLITE_BUSY_MS sets the wait (default
 * 2000 ms: long enough for any write of ours, short enough that a stuck
 * writer cannot hold a SIP worker for long).
 *
 * Built by scripts/build-preload; pbx/kamailio.py preloads it.
 */
#include <sqlite3.h>
#include <stdlib.h>

static int busy_ms = 2000;

static int set_busy_timeout(sqlite3 *db, char **err,
                            const struct sqlite3_api_routines *api)
{
    (void)err;
    (void)api;
    sqlite3_busy_timeout(db, busy_ms);
    return SQLITE_OK;
}

__attribute__((constructor)) static void register_busy_timeout(void)
{
    const char *env = getenv("PONTE_SQLITE_BUSY_MS");
    if (env != NULL) {
        long ms = strtol(env, NULL, 10);
        if (ms > 0 && ms <= 60000)
            busy_ms = (int)ms;
    }
    sqlite3_auto_extension((void (*)(void))set_busy_timeout);
}
