"""The one error type kvcheck raises for bad input: its message says what to do."""


class KvcheckError(Exception):
    """A user-facing error: bad input or a missing prerequisite.

    The CLI prints ``kvcheck: <message>`` and exits 2; the pytest plugin turns it into a usage error.
    """
