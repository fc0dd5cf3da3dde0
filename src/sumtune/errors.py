"""Exceptions that carry a message meant for the user."""


class SumtuneError(Exception):
    """An error caused by user input; the message names the value and the fix.

    The command line prints the message without a traceback and exits with status 2.
    """


class ConfigError(SumtuneError):
    """One or more invalid configuration values, all reported in one message."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class DataError(SumtuneError):
    """Invalid or unreadable input data."""


class CheckpointError(SumtuneError):
    """A checkpoint that is missing, unsafe to load, or does not fit the model."""
