"""JSON as the stand-in writes and reads its own small files, without the json module.

Every Tentacle command is a new process, and importing json (which brings re and enum) was
about a third of a short command's imports. `dumps` writes exactly what `json.dumps` writes
for the values the stand-in keeps (dicts with string keys, lists, strings, numbers, booleans,
None; ASCII only, as json's default). `loads` takes a shortcut only for text that is exactly
what `dumps` writes, in the writer's layout, of a value with no string that needs escaping:
it reads a candidate and accepts it only if writing it back gives the same text; any other
text (escapes, other spacing, a file someone else wrote, an error) goes to `json.loads`, so
the answer and the errors stay json's (tests/unit/test_tentacle_without_imports.py holds
both equal to the json module).
"""

from __future__ import annotations

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_INFINITY = float("inf")


def _string(text: str) -> str:
    """json's encode_basestring_ascii."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    out = []
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            code -= 0x10000
            out.append(f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}")
    return '"' + "".join(out) + '"'


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (_INFINITY, -_INFINITY):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(
    value: object, *, indent: int | None = None, separators: tuple[str, str] | None = None
) -> str:
    """json.dumps(value, indent=indent, separators=separators)."""
    item, key = separators or ((", ", ": ") if indent is None else (",", ": "))
    return _dumps(value, indent, item, key, 0)


def _dumps(value: object, indent: int | None, item: str, key: str, depth: int) -> str:
    if isinstance(value, dict):
        if not value:
            return "{}"
        parts = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError("the stand-in's JSON keys are strings")
            parts.append(_string(k) + key + _dumps(v, indent, item, key, depth + 1))
        return _wrap("{", parts, "}", indent, item, depth)
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        parts = [_dumps(v, indent, item, key, depth + 1) for v in value]
        return _wrap("[", parts, "]", indent, item, depth)
    return _scalar(value)


def _wrap(
    open_: str, parts: list[str], close: str, indent: int | None, item: str, depth: int
) -> str:
    if indent is None:
        return open_ + item.join(parts) + close
    inner, outer = "\n" + " " * (indent * (depth + 1)), "\n" + " " * (indent * depth)
    return open_ + inner + (item + inner).join(parts) + outer + close


def loads(
    text: str, *, indent: int | None = None, separators: tuple[str, str] | None = None
) -> object:
    """json.loads(text); without the json module when text is what dumps(value, indent,
    separators) writes."""
    if "\\" not in text:
        try:
            value, end = _candidate(text, 0)
        except (IndexError, ValueError, RecursionError):
            pass
        else:
            if end == len(text) and dumps(value, indent=indent, separators=separators) == text:
                return value
    import json

    return json.loads(text)


_SPACE = " \n"
_ENDS = ",]} \n"


def _candidate(text: str, at: int) -> tuple[object, int]:
    """A value read from text at `at` (no escapes, loosely: the caller checks it by writing
    it back), and where it ends; ValueError or IndexError where it cannot be one."""
    while text[at] in _SPACE:
        at += 1
    first = text[at]
    if first == '"':
        end = text.index('"', at + 1)
        return text[at + 1 : end], end + 1
    if first in "[{":
        close = "]" if first == "[" else "}"
        items: list = []
        pairs: dict = {}
        at += 1
        while True:
            while text[at] in _SPACE:
                at += 1
            if text[at] == close:
                return (items if first == "[" else pairs), at + 1
            if items or pairs:
                if text[at] != ",":
                    raise ValueError(at)
                at += 1
            if first == "[":
                value, at = _candidate(text, at)
                items.append(value)
                continue
            name, at = _candidate(text, at)
            while text[at] in _SPACE:
                at += 1
            if not isinstance(name, str) or text[at] != ":" or name in pairs:
                raise ValueError(at)
            pairs[name], at = _candidate(text, at + 1)
    end = at
    while end < len(text) and text[end] not in _ENDS:
        end += 1
    return _number_or_literal(text[at:end]), end


def _number_or_literal(word: str) -> object:
    literals = {"true": True, "false": False, "null": None}
    if word in literals:
        return literals[word]
    if "." in word or "e" in word or "E" in word:
        number = float(word)
        if number != number or number in (_INFINITY, -_INFINITY):
            raise ValueError(word)
        return number
    return int(word)
