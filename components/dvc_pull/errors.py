"""The errors a pull raises; their messages name the bad value and what would be valid."""


class DvcPullError(RuntimeError):
    """A pull that cannot succeed; the message says which input is wrong and what would be valid."""


class DvcPullInputError(DvcPullError, ValueError):
    """A parameter is wrong on its face, or names something the repository does not have: not worth retrying."""
