"""Where Cog hands a request to a predictor: values made their declared types, URL inputs fetched with
limits, and the prediction's input files removed when it ends.

Every ``predict.py`` decorates ``predict`` with ``@boundary.prediction``. This is the one module of
``predictors.common`` that imports ``cog``, and only ``predict.py`` files import it.

- URL and data-URI inputs. Cog (coglet 0.23.1) coerces such a string into a ``cog.types.URLPath`` and calls
  its ``convert()`` in a thread pool before ``predict()`` (``crates/coglet-python/src/input.rs``). Importing
  this module makes ``convert()`` return the URLPath itself, so nothing is downloaded there; the decorator
  then fetches each one through ``predictors.common.input_files`` (deadline, byte cap, cancellable, a
  sentence per failure) and passes ``predict()`` the local file. Coglet's own clean-up calls ``unlink()`` on
  what ``convert()`` returned, a no-op for an URLPath that never downloaded.
- Numbers. JSON has one number type, and Cog's schema check lets ``1`` through for a ``float`` input and
  ``2.0`` for an ``int`` input, unchanged. Libraries are stricter (diffusers refuses an ``int``
  ``controlnet_conditioning_scale``; ``range(2.0)`` fails), so each number becomes its declared type here.
- Defaults. Coglet writes the ``Input(default=...)`` values into ``predict.__defaults__``
  (``unwrap_field_info_defaults`` in ``crates/coglet-python/src/predictor.rs``); it reaches the wrapper,
  which has none, so the wrapper resolves them from the original signature, as direct library calls need.

The decorator keeps the signature visible (``functools.wraps``; Cog's inspector unwraps a closure holding
one function, ``cog/_inspector.py`` ``_unwrap``), and an iterator ``predict`` stays an iterator, its files
removed when the iteration ends, is cancelled or fails.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from collections.abc import Callable
from typing import Any

from cog import FieldInfo, Path, URLPath

from predictors.common import input_files
from predictors.common.errors import InputError, excerpt


def _deferred(self: URLPath) -> URLPath:
    """``URLPath.convert`` replacement: the download happens inside ``predict()`` (see the module doc)."""
    return self


URLPath.convert = _deferred


class _Plan:
    """What the wrapper does to each argument of one ``predict`` signature."""

    def __init__(self, predict: Callable[..., Any]) -> None:
        self.signature = inspect.signature(predict)
        hints = typing.get_type_hints(predict)
        self.numbers = {
            name: kind
            for name in self.signature.parameters
            if (kind := _number_kind(hints.get(name))) is not None
        }

    def arguments(
        self, files: input_files.PredictionFiles, args: tuple, kwargs: dict
    ) -> inspect.BoundArguments:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        for name, value in values.items():
            if isinstance(value, FieldInfo):
                value = value.default
            if name in self.numbers and value is not None:
                value = _coerce(name, value, self.numbers[name])
            values[name] = value
        # Downloads come after every value is known to be usable: a bad number costs no transfer.
        for name, value in values.items():
            values[name] = _fetch(files, name, value)
        return bound


def _number_kind(annotation: Any) -> type | None:
    """``int`` or ``float`` for ``int``/``float`` annotations, optional or not; None for anything else."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation = members[0] if len(members) == 1 else None
    return annotation if annotation in (int, float) else None


def _coerce(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {excerpt(value)}.")
    if kind is float:
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        raise InputError(f"{name} must be a whole number, got {excerpt(value)}.")
    return int(value)


def _fetch(files: input_files.PredictionFiles, name: str, value: Any) -> Any:
    if isinstance(value, list):
        return [_fetch(files, f"{name}[{index}]", item) for index, item in enumerate(value)]
    if not isinstance(value, URLPath):
        return value
    what = f"input {name}"
    if value.source.startswith("data:"):
        return Path(files.save(value.fileobj, value.filename, what))
    return Path(files.download(value.source, value.filename, what))


def prediction(predict: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a predictor's ``predict``: typed numbers, limited downloads, input files removed after."""
    plan = _Plan(predict)

    if inspect.isgeneratorfunction(predict):

        @functools.wraps(predict)
        def iterate(*args: Any, **kwargs: Any) -> Any:
            with input_files.prediction_files() as files:
                bound = plan.arguments(files, args, kwargs)
                yield from predict(*bound.args, **bound.kwargs)

        return iterate

    @functools.wraps(predict)
    def run(*args: Any, **kwargs: Any) -> Any:
        with input_files.prediction_files() as files:
            bound = plan.arguments(files, args, kwargs)
            return predict(*bound.args, **bound.kwargs)

    return run
