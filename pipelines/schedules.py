"""Recurring-run triggers for KFP: cron expressions, fixed intervals and a time window, checked before anything is sent.

KFP's scheduler (robfig/cron with seconds) expects six fields: second minute hour day-of-month
month day-of-week. The usual five-field form is accepted and gets ``0`` seconds in front. Start and
end times are RFC 3339 with a time zone, sent in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from kfp_server_api import V2beta1CronSchedule, V2beta1PeriodicSchedule, V2beta1Trigger

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


@dataclass(frozen=True)
class CronField:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # symbolic values, numbered from `low`
    question_mark: bool = False  # "?" (no specific value) is allowed

    def describe(self) -> str:
        text = f"{self.low}-{self.high}"
        if self.names:
            text += f" or {self.names[0]}-{self.names[-1]}"
        return text


SECOND = CronField("second", 0, 59)
FIELDS_5 = (
    CronField("minute", 0, 59),
    CronField("hour", 0, 23),
    CronField("day of month", 1, 31, question_mark=True),
    CronField("month", 1, 12, MONTHS),
    CronField("day of week", 0, 6, DAYS, question_mark=True),
)
FIELDS_6 = (SECOND, *FIELDS_5)
# Descriptors the scheduler understands as they are.
DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")

INTERVAL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_CONCURRENCY = (1, 10)  # the API's documented range for max_concurrency


class ScheduleError(ValueError):
    """A cron expression, interval or schedule setting that KFP would not accept."""


def _value(text: str, field: CronField, expression: str) -> int:
    upper = text.upper()
    if field.names and upper in field.names:
        return field.low + field.names.index(upper)
    if not text.isdigit():
        raise ScheduleError(
            f"cron {expression!r}: {field.name} field has {text!r}; valid values are {field.describe()}"
        )
    number = int(text)
    if not field.low <= number <= field.high:
        raise ScheduleError(
            f"cron {expression!r}: {field.name} {number} is out of range; valid values are {field.describe()}"
        )
    return number


def _check_field(text: str, field: CronField, expression: str) -> None:
    if text == "?" and field.question_mark:
        return
    for part in text.split(","):
        if not part:
            raise ScheduleError(f"cron {expression!r}: {field.name} field {text!r} has an empty list item")
        base, _, step = part.partition("/")
        if "/" in part:
            if not step.isdigit() or int(step) == 0:
                raise ScheduleError(f"cron {expression!r}: {field.name} step {step!r} must be a positive whole number")
        if base == "*":
            continue
        low_text, dash, high_text = base.partition("-")
        low = _value(low_text, field, expression)
        if dash:
            high = _value(high_text, field, expression)
            if high < low:
                raise ScheduleError(
                    f"cron {expression!r}: {field.name} range {base!r} runs backwards; "
                    f"valid values are {field.describe()}"
                )


def parse_cron(expression: str) -> str:
    """The six-field cron string KFP expects, from a 5- or 6-field expression (or an @descriptor)."""
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() in DESCRIPTORS:
            return text.lower()
        raise ScheduleError(f"cron {expression!r}: unknown descriptor; use one of {', '.join(DESCRIPTORS)}")
    fields = text.split(" ") if text else []
    if len(fields) == 5:
        layout = FIELDS_5
    elif len(fields) == 6:
        layout = FIELDS_6
    else:
        raise ScheduleError(
            f"cron {expression!r} has {len(fields)} field(s); give 5 (minute hour day-of-month month "
            "day-of-week) or 6 (with seconds first)"
        )
    for value, field in zip(fields, layout, strict=True):
        _check_field(value, field, expression)
    return text if len(fields) == 6 else f"0 {text}"


def parse_interval(text: str) -> int:
    """Seconds from an interval such as ``30m``, ``6h``, ``1d``, ``1h30m`` or a bare number of seconds."""
    cleaned = text.strip().lower()
    if cleaned.isdigit():
        seconds = int(cleaned)
    else:
        parts = re.fullmatch(r"(?:\d+[smhdw])+", cleaned) and re.findall(r"(\d+)([smhdw])", cleaned)
        if not parts:
            raise ScheduleError(
                f"interval {text!r} is not a duration; use a number with a unit s, m, h, d or w "
                "(30m, 6h, 1d, 1h30m) or plain seconds"
            )
        seconds = sum(int(number) * INTERVAL_UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ScheduleError(f"interval {text!r} must be longer than 0 seconds")
    return seconds


def check_max_concurrency(value: int) -> int:
    low, high = MAX_CONCURRENCY
    if not low <= value <= high:
        raise ScheduleError(f"max concurrency {value} is out of range; KFP accepts {low}-{high}")
    return value


def parse_time(text: str, flag: str = "time") -> str:
    """An RFC 3339 time with a zone (``2025-06-01T03:00:00Z``, ``...+02:00``) or a date, as UTC ``...Z``."""
    text = text.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    is_date = re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) is not None
    if moment is None or moment.tzinfo is None and not is_date:
        raise ScheduleError(
            f"{flag} {text!r} is not an RFC 3339 time with a time zone, such as 2025-06-01T03:00:00Z, "
            "2025-06-01T05:00:00+02:00 or a date (2025-06-01, midnight UTC)"
        )
    if moment.tzinfo is None:  # a bare date
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_window(start_time: str | None, end_time: str | None, now: datetime | None = None) -> None:
    """The end (when given) must be after the start and not past: such a schedule would never run."""
    if end_time is None:
        return
    end = datetime.fromisoformat(end_time)
    if start_time is not None and end <= datetime.fromisoformat(start_time):
        raise ScheduleError(f"--end-time {end_time} is not after --start-time {start_time}")
    if end <= (now or datetime.now(timezone.utc)):
        raise ScheduleError(f"--end-time {end_time} has passed: the schedule would never start a run")


def trigger(
    cron: str | None = None, interval: str | None = None, start_time: str | None = None, end_time: str | None = None
) -> V2beta1Trigger:
    """The v2beta1 ``Trigger`` for a cron expression or an interval (exactly one of them), in an optional window.

    ``start_time`` and ``end_time`` are RFC 3339 (see :func:`parse_time`).
    """
    if (cron is None) == (interval is None):
        raise ScheduleError("give exactly one of a cron expression or an interval")
    window = {"start_time": start_time, "end_time": end_time}
    if cron is not None:
        return V2beta1Trigger(cron_schedule=V2beta1CronSchedule(cron=parse_cron(cron), **window))
    return V2beta1Trigger(periodic_schedule=V2beta1PeriodicSchedule(interval_second=parse_interval(interval), **window))


def describe_trigger(trigger_: V2beta1Trigger | None) -> str:
    """``cron 0 0 3 * * *`` or ``every 21600s``, with the window when there is one."""
    schedule = trigger_ and (trigger_.cron_schedule or trigger_.periodic_schedule)
    if not schedule:
        return "no trigger"
    text = f"cron {schedule.cron}" if trigger_.cron_schedule else f"every {schedule.interval_second}s"
    if schedule.start_time:
        text += f" from {_utc(schedule.start_time)}"
    if schedule.end_time:
        text += f" until {_utc(schedule.end_time)}"
    return text


def _utc(moment) -> str:
    """A time the API answered (a datetime once kfp_server_api read it) as ``2025-06-01T03:00:00Z``."""
    if isinstance(moment, datetime):
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(moment)
