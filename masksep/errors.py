"""The one error type a user sees: one line, exit code 2, no traceback."""


class UserError(Exception):
    """Bad input from the user (config, sweep spec, audio, data folder, checkpoint).

    The message is a single line that names the file or the field at fault.
    The CLI prints it as ``masksep: error: <message>`` and exits with code 2.
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ConfigError(UserError):
    """A config field that is unknown, of the wrong type, or impossible."""

    def __init__(self, field: str, message: str, source: str | None = None):
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {message}")
        self.field = field
        self.message = message  # the reason alone, for callers that re-word where it happened
        self.source = source
