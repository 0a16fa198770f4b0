"""The one error type a user sees: one line, exit code 2, no traceback.

masksep's exit codes (``masksep --help`` lists them too):
0 done; 1 a Ray job that failed or was stopped (``masksep submit``); 2 bad input
(a config, spec, flag, file or folder: one line naming it); 3 the data check found
problems (``masksep data check``, or a data set refused when opened, with the list);
130 interrupted.
"""

EXIT_BAD_INPUT = 2
EXIT_DATA_PROBLEMS = 3


class UserError(Exception):
    """Bad input from the user (config, sweep spec, audio, data folder, checkpoint).

    The message is a single line that names the file or the field at fault.
    The CLI prints it as ``masksep: error: <message>`` and exits with code 2.
    """

    exit_code = EXIT_BAD_INPUT

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
