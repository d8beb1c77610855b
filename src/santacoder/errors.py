"""The error type for bad user input: the entry points print its message without a traceback."""


class ConfigError(ValueError):
    """A configuration value or input path is invalid; the message names it and says what to do."""
