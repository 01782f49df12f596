"""The two kinds of failure the command line tells apart (imports nothing, so every module
can raise them)."""


class InputError(ValueError):
    """Bad input distgan found itself (a key, file, value or address): the command line
    prints its one-line message and exits 2. Other exceptions are bugs and show where."""


class RunFailed(Exception):
    """A run or job that started and failed (the command line's exit status 1), unlike bad
    input (exit 2); its message is one line."""
