"""Errors that are the user's to fix: the CLI prints them as one line, no traceback."""


class UserError(Exception):
    """Base class for problems caused by user input (flags, files, env names)."""


class ConfigError(UserError):
    """Unknown key, wrong type, out-of-range value or unknown preset."""


class EnvError(UserError):
    """Unknown environment name or an environment that cannot give pixels."""


class TrainingError(UserError):
    """The run cannot go on (e.g. repeated non-finite losses); the message says what to change."""


class CheckpointError(UserError):
    """No usable checkpoint where one is needed: corrupted, from another version, or not
    fitting the agent."""
