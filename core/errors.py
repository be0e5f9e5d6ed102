"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

import click


class RagloopError(click.ClickException):
    """A problem the user can fix; the message names it and the fix, on one line."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
