"""Plain JSON into dataclasses, every value checked for type and range, each refusal naming its field.

A field's type hint says what JSON type it takes; an optional :class:`Rule` says which values are
allowed and gives the words of the message, for example
``data.window_slices: expected an odd int >= 1, got "five"``. The same rules back the
command-line flags (:func:`argparse_type`), so a flag and a hand edit are refused in the same words.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..paths import TranssegError


class FieldError(TranssegError):
    """A value that does not fit its field; the message starts with the field path."""


@dataclass(frozen=True)
class Rule:
    expected: str                                  # the words after "expected", e.g. "an odd int >= 1"
    accepts: Callable[[Any], bool] = lambda value: True


def show(value: Any) -> str:
    """A value as the user wrote it in JSON."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def refuse(path: str, expected: str, value: Any) -> FieldError:
    return FieldError(f"{path}: expected {expected}, got {show(value)}")


# ------------------------------------------------------------------------------------------ rules
def int_at_least(low: int) -> Rule:
    return Rule(f"an int >= {low}", lambda v: v >= low)


def odd_int_at_least(low: int) -> Rule:
    return Rule(f"an odd int >= {low}", lambda v: v >= low and v % 2 == 1)


def number_above(low: float, inclusive: bool = False) -> Rule:
    if inclusive:
        return Rule(f"a number >= {low:g}", lambda v: v >= low)
    return Rule(f"a number > {low:g}", lambda v: v > low)


def number_in(low: float, high: float, high_inclusive: bool = True) -> Rule:
    bracket = "]" if high_inclusive else ")"
    return Rule(f"a number in [{low:g}, {high:g}{bracket}",
                lambda v: low <= v <= high if high_inclusive else low <= v < high)


def one_of(*choices: Any) -> Rule:
    return Rule("one of " + ", ".join(show(c) for c in choices), lambda v: v in choices)


def non_empty_string() -> Rule:
    return Rule("a non-empty string", lambda v: bool(v.strip()))


def pair(item: Rule, order: str = "") -> Rule:
    """Two values each accepted by ``item``; ``order`` '<=' or '<' also asks first <op> second."""
    compare = {"": lambda a, b: True, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}[order]
    words = f"two values, each {item.expected}" + (f", the first {order} the second" if order else "")
    return Rule(words, lambda v: len(v) == 2 and all(item.accepts(x) for x in v) and compare(*v))


# ------------------------------------------------------------------------------------- conversion
class _Mismatch(Exception):
    """The JSON type is wrong; the caller words the message for the whole field."""


def describe(hint: Any) -> str:
    """'an int', 'a list of numbers', 'a string or null', ... for a type hint."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        inner = [a for a in arguments if a is not type(None)]
        return " or ".join(describe(a) for a in inner) + " or null"
    if origin is list:
        return "a list of " + {int: "ints", float: "numbers", str: "strings"}.get(arguments[0], "values")
    return {int: "an int", float: "a number", str: "a string", bool: "true or false"}.get(hint, "an object")


def _scalar(hint: Any, value: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if isinstance(value, bool):
        raise _Mismatch        # JSON true is no number
    if hint is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    return value


@dataclass(frozen=True)
class Schema:
    """Per dataclass: a Rule per field (optional) and a check of the whole instance (optional)."""

    rules: Mapping[type, Mapping[str, Rule]]
    checks: Mapping[type, Callable[[Any, str], None]]

    def build(self, cls: type, data: Any, path: str = "") -> Any:
        """An instance of dataclass ``cls`` from JSON ``data``; raises FieldError naming the first bad field."""
        where = path or "the top level"
        if not isinstance(data, dict):
            raise refuse(where, "an object", data)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise FieldError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(names)}")
        hints = typing.get_type_hints(cls)
        values = {}
        for name in (n for n in names if n in data):
            field_path = f"{path}.{name}" if path else name
            rule = self.rules.get(cls, {}).get(name)
            expected = describe(hints[name]) if rule is None else rule.expected + (
                " or null" if type(None) in typing.get_args(hints[name]) else "")
            try:
                value = self._value(hints[name], data[name], field_path)
            except _Mismatch:
                raise refuse(field_path, expected, data[name]) from None
            if value is not None and rule is not None and not rule.accepts(value):
                raise refuse(field_path, expected, data[name])
            values[name] = value
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise FieldError(f"{where}: missing key(s) {missing}")
        instance = cls(**values)
        if cls in self.checks:
            self.checks[cls](instance, path)
        return instance

    def _value(self, hint: Any, value: Any, path: str) -> Any:
        origin, arguments = typing.get_origin(hint), typing.get_args(hint)
        if dataclasses.is_dataclass(hint):
            return self.build(hint, value, path)
        if origin is typing.Union:
            if value is None:
                return None
            inner = [a for a in arguments if a is not type(None)]
            return self._value(inner[0], value, path)
        if origin is list:
            if not isinstance(value, (list, tuple)):
                raise _Mismatch
            return [self._value(arguments[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
        return _scalar(hint, value)


def argparse_type(kind: type, rule: Rule) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses ``kind`` and applies ``rule``: the flag is refused in the rule's words."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {rule.expected}, got {text!r}") from None
        if not rule.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {rule.expected}, got {text}")
        return value
    return parse

