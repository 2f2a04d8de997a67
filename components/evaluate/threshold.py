"""The promotion gate's accuracy threshold, checked; torch-free, so that ``check_arguments`` checks it without
loading torch."""


def validate_threshold(threshold: float) -> None:
    if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"accuracy_threshold must be a number in [0, 1], got {threshold!r}")
