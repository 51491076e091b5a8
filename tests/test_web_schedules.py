"""The console's Schedules page over real HTTP with a fake backend
(tests/web_helpers.py): the table and its escaping, the add and cancel forms
by role, their CSRF check, and bad input shown back with nothing sent on.
The real path behind it (role, validation, audit) is the CLI's:
tests/test_schedule_calls.py."""

from __future__ import annotations

from tests.web_helpers import Console, aio


@aio
async def test_schedules_page_lists_adds_and_cancels_by_role() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        page = await (await c.get("/schedules")).text()
        assert "0211&lt;script&gt;" in page and "0211<script>" not in page
        assert "no answer" in page and "(moderator first)" in page
        assert page.count(">Cancel</button>") == 2, "the pending ones"
        assert 'action="/schedules"' in page and csrf in page

        form = {
            "csrf": csrf,
            "room": "demo",
            "at": "2027-01-15T10:00",
            "numbers": "0211, 0212",
            "moderator": "0213",
            "moderator_first": "1",
        }
        done = await c.post("/schedules", data=form, allow_redirects=False)
        assert done.status == 303 and done.headers["Location"] == "/schedules"
        sent = con.backend.calls[-1]
        assert sent[:2] == ("schedule", "boss")
        # The browser's local time is read in the appliance's time zone.
        assert sent[2]["at"] == "2027-01-15T10:00:00-03:00", sent
        assert sent[2]["moderator_first"] is True and sent[2]["moderator"] == "0213"

        bad = await c.post("/schedules", data={**form, "numbers": "x"}, allow_redirects=False)
        text = await bad.text()
        assert bad.status == 400 and "is not a phone number" in text and "&lt;x&gt;" in text
        assert 'value="x"' in text, "the form keeps what was typed"

        cancel = await c.post("/schedules/1/cancel", data={"csrf": csrf}, allow_redirects=False)
        assert cancel.status == 303
        assert con.backend.calls[-1][2] == {"action": "cancel", "id": "1"}

        n = len(con.backend.calls)
        forged = await c.post("/schedules", data={**form, "csrf": "nope"}, allow_redirects=False)
        assert forged.status == 403 and len(con.backend.calls) == n, "no CSRF, nothing sent"

        # A sub-administrator sees and cancels only their department's room.
        s, s_csrf = await con.login("sub")
        page = await (await s.get("/schedules")).text()
        assert "0211&lt;script&gt;" in page and "0212" not in page
        assert '<option value="other"' not in page
        # A read-only admin sees all and changes nothing.
        r, r_csrf = await con.login("ro")
        page = await (await r.get("/schedules")).text()
        assert "0212" in page and ">Cancel</button>" not in page and "<select" not in page
        n = len(con.backend.calls)
        ro = await r.post("/schedules", data={**form, "csrf": r_csrf}, allow_redirects=False)
        assert ro.status == 403 and "read-only" in await ro.text()
        assert [x for x in con.backend.calls[n:] if x[2].get("action") != "list"] == []
