"""Errors whose message is written for the person using a predictor.

Every predictor raises one of these for a problem the user can act on; the message is one or two plain
sentences that say what is wrong and what to do, never a stack trace.
"""


class TriptychError(Exception):
    """Base class: the message is meant to be shown to the user as it is."""


class InputError(TriptychError, ValueError):
    """An input cannot be used (undecodable, too large, no person found, ...)."""


class WeightsError(TriptychError, RuntimeError):
    """A weights file is missing, corrupt or cannot be fetched."""


class MissingWeightsError(WeightsError):
    """A weights file is absent and none of its sources could be reached (typically: offline)."""


class ResourceError(TriptychError, RuntimeError):
    """The hardware ran out of something (GPU memory); the message names what to lower."""


def excerpt(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting a user's input inside an error message.

    Inputs can be megabytes long; an error that repeats one whole would bloat every log, webhook and client.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text)} characters)"
