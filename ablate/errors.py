"""The toolkit's own error: bad input that the CLI turns into one line and exit code 2."""


class AblateError(ValueError):
    """Input the toolkit cannot use; the message says what is wrong and how to fix it."""
