"""Cron expressions, intervals and schedule settings for recurring runs (pipelines/schedules.py)."""

from __future__ import annotations

import pytest

from pipelines.schedules import ScheduleError, check_max_concurrency, parse_cron, parse_interval, trigger


@pytest.mark.parametrize(
    ("expression", "six_fields"),
    [
        ("0 3 * * *", "0 0 3 * * *"),
        ("*/15 * * * *", "0 */15 * * * *"),
        ("0 9-17 * * MON-FRI", "0 0 9-17 * * MON-FRI"),
        ("30 2 1,15 jan,jul ?", "0 30 2 1,15 jan,jul ?"),
        ("  0   3 * *  *  ", "0 0 3 * * *"),
        ("0 0 3 * * *", "0 0 3 * * *"),  # six fields: as they are
        ("15 */5 1-6/2 * * 0", "15 */5 1-6/2 * * 0"),
        ("@daily", "@daily"),
        ("@HOURLY", "@hourly"),
    ],
)
def test_cron_accepted(expression, six_fields):
    assert parse_cron(expression) == six_fields


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("60 * * * *", ("minute 60", "0-59")),
        ("* 24 * * *", ("hour 24", "0-23")),
        ("* * 0 * *", ("day of month 0", "1-31")),
        ("* * 32 * *", ("day of month 32", "1-31")),
        ("* * * 13 *", ("month 13", "1-12 or JAN-DEC")),
        ("* * * * 7", ("day of week 7", "0-6 or SUN-SAT")),
        ("61 * * * * *", ("second 61", "0-59")),
        ("* * * FOO *", ("month field has 'FOO'", "1-12")),
        ("* 5-2 * * *", ("hour range '5-2' runs backwards",)),
        ("*/0 * * * *", ("minute step '0'",)),
        ("? * * * *", ("minute field has '?'",)),
        ("1,,2 * * * *", ("empty list item",)),
        ("* * * *", ("4 field(s)", "give 5")),
        ("* * * * * * *", ("7 field(s)",)),
        ("", ("0 field(s)",)),
        ("@every-day", ("unknown descriptor",)),
    ],
)
def test_bad_cron_names_the_field_and_range(expression, names):
    with pytest.raises(ScheduleError) as error:
        parse_cron(expression)
    for text in names:
        assert text in str(error.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("6h", 21600), ("1d", 86400), ("1h30m", 5400), ("2w", 1209600), ("45s", 45), ("90", 90)],
)
def test_interval(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["0", "0m", "5x", "", "-1h", "1.5h", "h"])
def test_bad_interval(text):
    with pytest.raises(ScheduleError, match="interval"):
        parse_interval(text)


def test_max_concurrency_range():
    assert check_max_concurrency(1) == 1 and check_max_concurrency(10) == 10
    for bad in (0, 11, -1):
        with pytest.raises(ScheduleError, match="1-10"):
            check_max_concurrency(bad)


def test_trigger_bodies_use_the_api_field_names_and_int64_strings():
    assert trigger(cron="0 3 * * *") == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert trigger(interval="6h") == {"periodic_schedule": {"interval_second": "21600"}}
    with pytest.raises(ScheduleError, match="exactly one"):
        trigger()
    with pytest.raises(ScheduleError, match="exactly one"):
        trigger(cron="* * * * *", interval="1h")
