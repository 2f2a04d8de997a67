"""Cron expressions, intervals and schedule settings for recurring runs (pipelines/schedules.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from kfp_server_api import ApiClient

from pipelines.schedules import (
    ScheduleError,
    check_max_concurrency,
    check_window,
    describe_trigger,
    parse_cron,
    parse_interval,
    parse_time,
    trigger,
)


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


def sent(model) -> dict:
    """The JSON kfp.Client's API client sends for a model."""
    return ApiClient().sanitize_for_serialization(model)


def test_trigger_bodies_use_the_api_field_names():
    assert sent(trigger(cron="0 3 * * *")) == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert sent(trigger(interval="6h")) == {"periodic_schedule": {"interval_second": 21600}}
    window = trigger(interval="1h", start_time="2030-06-01T03:00:00Z", end_time="2030-07-01T00:00:00Z")
    assert sent(window)["periodic_schedule"] == {
        "interval_second": 3600,
        "start_time": "2030-06-01T03:00:00Z",
        "end_time": "2030-07-01T00:00:00Z",
    }
    assert describe_trigger(window) == "every 3600s from 2030-06-01T03:00:00Z until 2030-07-01T00:00:00Z"
    with pytest.raises(ScheduleError, match="exactly one"):
        trigger()
    with pytest.raises(ScheduleError, match="exactly one"):
        trigger(cron="* * * * *", interval="1h")


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2030-06-01T03:00:00Z", "2030-06-01T03:00:00Z"),
        ("2030-06-01T05:00:00+02:00", "2030-06-01T03:00:00Z"),
        ("2030-06-01T03:00:00.250Z", "2030-06-01T03:00:00Z"),
        ("2030-06-01", "2030-06-01T00:00:00Z"),
    ],
)
def test_times_are_sent_as_utc_rfc3339(text, utc):
    assert parse_time(text, "--start-time") == utc


@pytest.mark.parametrize("text", ["2030-06-01T03:00:00", "tomorrow", "2030-13-01T00:00:00Z", "2030-06-01 03:00"])
def test_a_time_without_a_zone_or_not_a_time_names_the_flag(text):
    with pytest.raises(ScheduleError, match=r"--end-time .* is not an RFC 3339 time with a time zone"):
        parse_time(text, "--end-time")


def test_the_window_must_end_after_it_starts_and_not_in_the_past():
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    check_window("2030-06-01T00:00:00Z", "2030-07-01T00:00:00Z", now)
    check_window(None, None, now)
    with pytest.raises(ScheduleError, match="--end-time 2030-05-01T00:00:00Z is not after --start-time"):
        check_window("2030-06-01T00:00:00Z", "2030-05-01T00:00:00Z", now)
    with pytest.raises(ScheduleError, match="--end-time 2029-12-31T00:00:00Z has passed"):
        check_window(None, "2029-12-31T00:00:00Z", now)
