"""The one error type every verb turns into a one-line message and exit 1."""


class UserError(Exception):
    """A problem the user can fix (bad config, missing file): printed without a traceback."""
