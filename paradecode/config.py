"""Options checked at the door: every value against its annotation before any tensor work.

A wrong option used to surface deep inside torch (``threshold="0.9"`` at a tensor
comparison, ``radius=2.5`` inside ``max_pool1d``). Here it raises at once, naming the
option, its owner and what is valid: ``TypeError`` for a wrong type, ``ValueError`` for a
wrong value (NaN, infinity, a string outside a ``Literal``, an int beyond 64 bits).

Range checks stay in each config's ``__post_init__``; combinations that have no effect are
the job of an optional ``validate()`` method, as in transformers' ``GenerationConfig``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
import numbers
import types
import typing
from typing import Any, Literal, Mapping, Union

__all__ = [
    "build_config", "check_arguments", "check_value", "generation_defaults", "type_hints", "validate_config",
]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

try:  # numpy is optional: its scalars are accepted where the Python type is
    import numpy as _np

    _NP_BOOL: tuple[type, ...] = (_np.bool_,)
except ImportError:  # pragma: no cover
    _NP_BOOL = ()


def _show(value: Any) -> str:
    """``type repr`` of a value, shortened: for messages."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def _describe(annotation: Any) -> str:
    """How a message names what an annotation accepts: 'an int', 'one of [...]', 'None or a float'."""
    if annotation is Any:
        return "anything"
    if annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return f"one of {list(args)}"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    names = {int: "an int", float: "a float", bool: "a bool (True or False)", str: "a string"}
    if annotation in names:
        return names[annotation]
    if origin is tuple or annotation is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple (or list) of {_plural(args[0])}"
        return f"a tuple (or list) of {len(args)} items" if args else "a tuple (or list)"
    if origin in (list, collections.abc.Sequence) or annotation in (list, collections.abc.Sequence):
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin in (dict, collections.abc.Mapping) or annotation in (dict, collections.abc.Mapping):
        return "a dict" + (f" with {_plural(args[0])} as keys" if args and args[0] is not Any else "")
    name = getattr(annotation, "__name__", str(annotation))
    return f"a {name}"


def _plural(annotation: Any) -> str:
    simple = {int: "ints", float: "floats", bool: "bools", str: "strings", Any: "anything"}
    return simple.get(annotation, f"items that are each {_describe(annotation)}")


class _Invalid(Exception):
    """Internal: which exception to raise and why, before the owner and name are added."""

    def __init__(self, kind: type[Exception], text: str) -> None:
        super().__init__(text)
        self.kind, self.text = kind, text


def _check_int(value: Any) -> int:
    if isinstance(value, bool) or isinstance(value, _NP_BOOL) or not isinstance(value, numbers.Integral):
        raise _Invalid(TypeError, f"must be an int, got {_show(value)}")
    out = int(value)
    if not INT64_MIN <= out <= INT64_MAX:
        raise _Invalid(ValueError, f"must fit in a signed 64-bit integer, got {out}")
    return out


def _check_float(value: Any) -> float:
    if isinstance(value, bool) or isinstance(value, _NP_BOOL) or not isinstance(value, numbers.Real):
        raise _Invalid(TypeError, f"must be a float, got {_show(value)}")
    try:
        out = float(value)
    except OverflowError:
        raise _Invalid(ValueError, f"must be a finite float, got {value} (too large for a float)") from None
    if not math.isfinite(out):
        raise _Invalid(ValueError, f"must be a finite float, got {out}")
    return out


def _check_sequence(value: Any, args: tuple, want: str, make: type) -> Any:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _Invalid(TypeError, f"must be {want}, got {_show(value)}")
    if args and not (len(args) == 2 and args[1] is Ellipsis) and make is tuple:
        if len(value) != len(args):
            raise _Invalid(ValueError, f"must be {want}, got {len(value)} items")
        items = args
    else:
        items = (args[0] if args else Any,) * len(value)
    out = []
    for i, (item, annotation) in enumerate(zip(value, items)):
        try:
            out.append(_convert(item, annotation))
        except _Invalid as e:
            raise _Invalid(e.kind, f"item {i} {e.text}") from None
    return make(out)


def _check_dict(value: Any, args: tuple) -> dict:
    if not isinstance(value, collections.abc.Mapping):
        raise _Invalid(TypeError, f"must be a dict, got {_show(value)}")
    key_t, val_t = args if len(args) == 2 else (Any, Any)
    out = {}
    for k, v in value.items():
        try:
            key = _convert(k, key_t)
        except _Invalid as e:
            raise _Invalid(e.kind, f"key {k!r} {e.text}") from None
        try:
            out[key] = _convert(v, val_t)
        except _Invalid as e:
            raise _Invalid(e.kind, f"entry {k!r} {e.text}") from None
    return out


def _check_union(value: Any, args: tuple, annotation: Any) -> Any:
    if value is None and type(None) in args:
        return None
    value_errors = []
    for member in args:
        if member is type(None):
            continue
        try:
            return _convert(value, member)
        except _Invalid as e:
            if e.kind is ValueError:  # the right type, a wrong value: that is the message to show
                value_errors.append(e)
    if value_errors:
        raise value_errors[0]
    raise _Invalid(TypeError, f"must be {_describe(annotation)}, got {_show(value)}")


def _convert(value: Any, annotation: Any) -> Any:
    """``value`` checked against ``annotation`` and converted (numpy scalars, lists -> tuples)."""
    if annotation is Any or annotation is object:
        return value
    if annotation is type(None):
        if value is not None:
            raise _Invalid(TypeError, f"must be None, got {_show(value)}")
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        for choice in args:  # compare kinds too: Literal[1] does not take True or 1.0
            if isinstance(choice, bool) or isinstance(value, (bool, *_NP_BOOL)):
                same = isinstance(choice, bool) and isinstance(value, (bool, *_NP_BOOL))
            elif isinstance(choice, int):
                same = isinstance(value, numbers.Integral)
            else:
                same = isinstance(value, type(choice))
            if same and choice == value:
                return choice
        raise _Invalid(ValueError, f"must be one of {list(args)}, got {value!r}")
    if origin in (Union, types.UnionType):
        return _check_union(value, args, annotation)
    if annotation is bool:
        if isinstance(value, bool) or isinstance(value, _NP_BOOL):
            return bool(value)
        raise _Invalid(TypeError, f"must be a bool (True or False), got {_show(value)}")
    if annotation is int:
        return _check_int(value)
    if annotation is float:
        return _check_float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise _Invalid(TypeError, f"must be a string, got {_show(value)}")
        return str(value)
    if origin is tuple or annotation is tuple:
        return _check_sequence(value, args, _describe(annotation), tuple)
    if origin in (list, collections.abc.Sequence) or annotation in (list, collections.abc.Sequence):
        return _check_sequence(value, args, _describe(annotation), list if origin is list or annotation is list else tuple)
    if origin in (dict, collections.abc.Mapping) or annotation in (dict, collections.abc.Mapping):
        return _check_dict(value, args)
    check_type = origin if isinstance(origin, type) else annotation
    if isinstance(check_type, type):
        if not isinstance(value, check_type):
            raise _Invalid(TypeError, f"must be {_describe(annotation)}, got {_show(value)}")
        return value
    return value  # an annotation we cannot check (a TypeVar, a forward reference): accept


def check_value(name: str, value: Any, annotation: Any, owner: str, *, kind: str = "option") -> Any:
    """``value`` checked against ``annotation`` and converted (numpy ints -> int, int -> float
    for a float, list -> tuple for a tuple).

    Raises ``TypeError`` (wrong type) or ``ValueError`` (NaN, infinity, not in a Literal, an
    int beyond 64 bits), e.g. ``strategy 'threshold': option threshold must be a float, got str '0.9'``.
    """
    try:
        return _convert(value, annotation)
    except _Invalid as e:
        raise e.kind(f"{owner}: {kind} {name} {e.text}.") from None


def type_hints(obj: Any) -> dict[str, Any]:
    """Resolved annotations of a class or function; a name that cannot be resolved counts as Any."""
    try:
        return typing.get_type_hints(obj)
    except (NameError, TypeError):
        raw = getattr(obj, "__annotations__", {})
        return {k: (v if not isinstance(v, str) else Any) for k, v in raw.items()}


def check_arguments(function: Any, owner: str, **values: Any) -> dict[str, Any]:
    """``values`` (keyword arguments of ``function``) each checked against ``function``'s own
    annotation by :func:`check_value`, so the signature is the one statement of what is valid."""
    hints = _signature_hints(getattr(function, "__func__", function))  # a bound method: its function
    return {k: check_value(k, v, hints.get(k, Any), owner, kind="argument") for k, v in values.items()}


@functools.lru_cache(maxsize=256)
def _signature_hints(function: Any) -> dict[str, Any]:
    """:func:`type_hints` of a function, resolved once (a scheduler checks its ``step`` arguments every step)."""
    return type_hints(function)


def generation_defaults(config_cls: type, model_defaults: Mapping[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` completed with a model's ``gen_length`` / ``block_length`` (the zoo's
    info.json, ``model.generation_defaults``) where ``config_cls`` has those fields and the user
    gave none. A ``steps`` field left unset whose integer default exceeds ``gen_length`` is
    lowered to ``gen_length``: LLaDA's 128 steps do not fit a 32-token canvas. Shared by
    ``paradecode.sample`` and the CLI, so both decode a shipped model the same way."""
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    out = dict(options)
    for key, value in model_defaults.items():
        if key in fields and key not in out:
            out[key] = value
    steps = fields.get("steps")
    gen = out.get("gen_length")
    is_int = lambda v: isinstance(v, numbers.Integral) and not isinstance(v, (bool, *_NP_BOOL))  # noqa: E731
    if steps is not None and "steps" not in out and is_int(steps.default) and is_int(gen) and steps.default > gen:
        out["steps"] = int(gen)
    return out


def build_config(config_cls: type, owner: str, options: dict[str, Any]) -> Any:
    """Instantiate the dataclass ``config_cls`` from ``options``.

    Unknown names raise ``ValueError`` listing the valid ones; every value is checked against
    its annotation (:func:`check_value`); the dataclass's ``__post_init__`` checks ranges; the
    ``validate()`` methods of its classes (:func:`validate_config`) refuse or warn about
    combinations that have no effect.
    """
    fields = {f.name for f in dataclasses.fields(config_cls) if f.init}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"{owner} got unknown option(s) {unknown}; valid options: {sorted(fields)}")
    hints = type_hints(config_cls)
    checked = {k: check_value(k, v, hints.get(k, Any), owner) for k, v in options.items()}
    try:
        instance = config_cls(**checked)
    except (ValueError, TypeError) as e:  # a range check of __post_init__: say whose option it is
        raise type(e)(f"{owner}: {e}") from None
    validate_config(instance)
    return instance


def validate_config(config: Any) -> None:
    """Run the ``validate()`` that each class of ``config``'s hierarchy defines itself, base
    first: a config composed from parts (``DiffusionConfig`` -> ``LowConfConfig`` ->
    ``Learn2PDConfig``) checks the combinations of every part without a subclass having to
    call up."""
    for klass in reversed(type(config).__mro__):
        validate = vars(klass).get("validate")
        if callable(validate):
            validate(config)
