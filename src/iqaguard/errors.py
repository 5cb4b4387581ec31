"""The one exception users catch: bad input, named and explained."""


class InputError(ValueError):
    """Raised when an argument (tensor, file, spec, name) is unusable.

    The message always names the argument and says what was wrong, so the CLI can print it
    as a one-line error without a traceback.
    """
