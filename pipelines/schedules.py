"""Recurring-run triggers for KFP: cron expressions and fixed intervals, checked before anything is sent.

KFP's scheduler (robfig/cron with seconds) expects six fields: second minute hour day-of-month
month day-of-week. The usual five-field form is accepted and gets ``0`` seconds in front.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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


def trigger(cron: str | None = None, interval: str | None = None) -> dict:
    """The v2beta1 ``Trigger`` for a cron expression or an interval (exactly one of them)."""
    if (cron is None) == (interval is None):
        raise ScheduleError("give exactly one of a cron expression or an interval")
    if cron is not None:
        return {"cron_schedule": {"cron": parse_cron(cron)}}
    # int64 fields travel as JSON strings in the v2beta1 API.
    return {"periodic_schedule": {"interval_second": str(parse_interval(interval))}}


def describe_trigger(trigger_body: dict) -> str:
    if "cron_schedule" in trigger_body:
        return f"cron {trigger_body['cron_schedule'].get('cron', '?')}"
    if "periodic_schedule" in trigger_body:
        return f"every {trigger_body['periodic_schedule'].get('interval_second', '?')}s"
    return "no trigger"
