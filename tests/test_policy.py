"""The line-profile decision: each step alone and in conflict."""

import datetime as dt

import pytest

from lines.policy import _holidays, cycle_start, decide, load_calendar, resolve
from lines.usage import UsageStore
from provisioning.loader import ConfigError, parse_config
from provisioning.schema import Config

BRT = dt.timezone(dt.timedelta(hours=-3))
MON_10H = dt.datetime(2026, 11, 23, 10, 0, tzinfo=BRT)  # a Monday

BASE = """
lines:
  "1001": {area_code: "11", department: vendas, profile: diretoria,
           temporary: {profile: ferias, from: 2026-12-20, to: 2027-01-10}}
  "1002": {area_code: "11", department: vendas}
  "1003": {area_code: "11", department: vendas}
departments:
  vendas: {profile: equipe}
profiles:
  diretoria:
    limits: {local_fixed: unlimited, mobile: 2, national_fixed: 1, international: blocked,
             collect: blocked, premium: blocked}
    calendar: {days: [mon, tue, wed, thu, fri], holidays: deny,
               windows: ["08:00-12:00", "13:00-18:00"]}
    allow_numbers: ["+5511991111111", "+12125551234"]
    deny_numbers: ["0900*", "+5511988887777"]
  ferias: {limits: {local: 5}}
  equipe: {quota: shared, limits: {local: 0.2, national: blocked}}
carrier: {csp: "21", force: true}
holidays: {country: BR, subdivision: SP,
           extra: [{date: 2026-11-24, name: Local, area_codes: ["11"]}]}
billing_cycle_day: 16
"""


@pytest.fixture
def cfg() -> Config:
    return parse_config(BASE, "t.yaml")


def nothing_used(key, cycle, types):
    return 0.0


def d(cfg, number, line="1001", at=MON_10H, used=nothing_used):
    return decide(cfg, line, number, at, used)


def test_emergency_goes_through_even_blacklisted_and_out_of_hours(cfg):
    sunday_night = dt.datetime(2026, 11, 22, 23, 0, tzinfo=BRT)
    for n in ("190", "192", "911", "112"):
        r = d(cfg, n, at=sunday_night)
        assert (r.decision, r.rule, r.max_seconds, r.counts) == ("allow", "emergency", None, False)


def test_deny_list_beats_the_allow_list_and_everything_after(cfg):
    r = d(cfg, "011988887777")
    assert (r.decision, r.rule) == ("deny", "deny_list")
    assert d(cfg, "09001234567").rule == "deny_list"


def test_allow_list_beats_calendar_and_type_block(cfg):
    saturday = dt.datetime(2026, 11, 28, 10, 0, tzinfo=BRT)
    assert d(cfg, "011991111111", at=saturday).decision == "allow"
    r = d(cfg, "+12125551234")  # international is blocked, but whitelisted
    assert (r.decision, r.rule, r.max_seconds) == ("allow", "allow_list", None)


def test_calendar_days_windows_and_holidays(cfg):
    assert d(cfg, "33334444", at=dt.datetime(2026, 11, 23, 12, 30, tzinfo=BRT)).rule == "calendar"
    assert d(cfg, "33334444", at=dt.datetime(2026, 11, 23, 7, 59, tzinfo=BRT)).rule == "calendar"
    assert d(cfg, "33334444", at=dt.datetime(2026, 11, 23, 13, 0, tzinfo=BRT)).decision == "allow"
    assert d(cfg, "33334444", at=dt.datetime(2026, 11, 28, 10, 0, tzinfo=BRT)).rule == "calendar"
    # 20 Nov is Consciência Negra (national); 24 Nov the extra one for DDD 11.
    holiday = d(cfg, "33334444", at=dt.datetime(2026, 11, 20, 10, 0, tzinfo=BRT))
    assert holiday.rule == "calendar" and "holiday" in holiday.reason
    assert d(cfg, "33334444", at=dt.datetime(2026, 11, 24, 10, 0, tzinfo=BRT)).rule == "calendar"


def test_type_rules_blocked_unlimited_minutes(cfg):
    assert d(cfg, "33334444").max_seconds is None  # local_fixed unlimited
    r = d(cfg, "0015442079460000")
    assert (r.decision, r.rule) == ("deny", "type")
    assert d(cfg, "05001234567").rule == "type"  # premium blocked
    assert d(cfg, "08001234567").rule == "type"  # toll_free: no limit listed -> blocked
    r = d(cfg, "02133334444")
    assert (r.call_type, r.max_seconds, r.dial) == ("national_fixed", 60.0, "0212133334444")


def test_a_type_named_directly_beats_its_group(cfg):
    r = d(cfg, "021988887777")  # national_mobile: counted under `mobile` (2 min)
    assert (r.limit, r.max_seconds) == ("mobile", 120.0)
    r = d(cfg, "02133334444")  # national_fixed is named: 1 min
    assert (r.limit, r.max_seconds) == ("national_fixed", 60.0)


def test_quota_left_and_limit_reached(cfg, tmp_path):
    store = UsageStore(tmp_path / "u.db")
    cycle = cycle_start(MON_10H.date(), 16)
    store.add("line:1001", cycle, "national_fixed", 45)
    r = d(cfg, "02133334444", used=store.used)
    assert r.max_seconds == pytest.approx(15)
    store.add("line:1001", cycle, "national_fixed", 15)
    r = d(cfg, "02133334444", used=store.used)
    assert (r.decision, r.rule) == ("deny", "quota")
    # The next cycle starts on the 16th with nothing used.
    later = dt.datetime(2026, 12, 16, 10, 0, tzinfo=BRT)
    assert d(cfg, "02133334444", at=later, used=store.used).decision == "allow"


def test_temporary_over_permanent_and_individual_over_shared(cfg):
    assert resolve(cfg, "1001", dt.date(2026, 11, 23))[0::2] == ("diretoria", "line:1001")
    assert resolve(cfg, "1001", dt.date(2026, 12, 25))[0::2] == ("ferias", "line:1001")
    assert resolve(cfg, "1001", dt.date(2027, 1, 11))[0] == "diretoria"
    assert resolve(cfg, "1002", dt.date(2026, 11, 23))[0::2] == ("equipe", "dept:vendas")
    christmas = dt.datetime(2026, 12, 25, 3, 0, tzinfo=BRT)  # ferias has no calendar
    assert d(cfg, "33334444", at=christmas).max_seconds == 300


def test_shared_pool_is_drawn_by_every_line_of_the_department(cfg, tmp_path):
    store = UsageStore(tmp_path / "u.db")
    cycle = cycle_start(MON_10H.date(), 16)
    store.add("dept:vendas", cycle, "local_fixed", 8)
    assert d(cfg, "33334444", line="1002", used=store.used).max_seconds == pytest.approx(4)
    assert d(cfg, "988887770", line="1003", used=store.used).max_seconds == pytest.approx(4)


def test_bad_numbers_and_unknown_lines_are_refused_clearly(cfg):
    r = d(cfg, "12345678901234567")
    assert (r.decision, r.rule) == ("deny", "invalid")
    assert d(cfg, "33334444", line="9999").rule == "no_profile"


def test_two_groups_covering_one_type_is_a_validation_error():
    from provisioning.loader import ConfigError

    with pytest.raises(ConfigError, match="both cover local_mobile"):
        parse_config("profiles: {p: {limits: {local: 10, mobile: 5}}}", "t.yaml")


@pytest.mark.parametrize(
    ("holidays", "says"),
    [
        ("{country: XX}", "holidays.country 'XX' is not a country the holidays package knows"),
        ("{country: br}", "an ISO 3166 code in capitals"),
        ("{country: BR, subdivision: ZZ}", "holidays.subdivision 'ZZ' is not one of BR's: AC, AL"),
    ],
)
def test_a_holiday_calendar_the_package_lacks_is_refused_at_load(holidays, says):
    # Before, it loaded, and every outbound call's decision raised at the calendar step.
    text = BASE.replace(BASE[BASE.index("holidays: {country") : BASE.index("billing_cycle")], "")
    with pytest.raises(ConfigError) as exc:
        parse_config(text + f"holidays: {holidays}\n", "t.yaml")
    assert says in str(exc.value)


def test_the_calendar_loads_before_the_first_call_needs_it(cfg):
    # A server calls load_calendar at start and on reload, so the first call
    # out does not import the package's country tables on the loop thread.
    _holidays.cache_clear()
    load_calendar(cfg.holidays, MON_10H.date())
    before = _holidays.cache_info()
    d(cfg, "33334444")  # a local call in hours: the calendar step reads the holidays
    after = _holidays.cache_info()
    assert (after.misses, after.hits) == (before.misses, before.hits + 1)
