"""JSON for the cold-start path: the `json` package's C accelerators without the `json` package.

`import json` pulls in `re` (and through it enum, functools, collections): ~6 ms of a CLI call that
engines make 3-4 times per container. The C scanner and encoder in `_json` need none of that, so the
hot path parses and writes JSON through them directly. Anything unusual (invalid input, a CPython
without `_json`) falls back to `json` itself, so errors and results are exactly json's.
"""
from __future__ import annotations

try:
    import _json
except ImportError:  # another Python implementation: the json package is all there is
    _json = None  # type: ignore[assignment]

_WHITESPACE = " \t\n\r"


class _DecoderOptions:
    """What _json.make_scanner reads from a json.JSONDecoder: json.loads()'s defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


_scan_once = _json.make_scanner(_DecoderOptions()) if _json is not None else None


def loads(data: str | bytes | bytearray) -> object:
    """json.loads(data), for UTF-8 bytes or str."""
    if _scan_once is not None:
        try:
            text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
            start = len(text) - len(text.lstrip(_WHITESPACE))
            value, end = _scan_once(text, start)
            if not text[end:].strip(_WHITESPACE):
                return value
        except (StopIteration, ValueError, RecursionError, SystemError):
            # SystemError: the C scanner reports syntax errors through json.decoder, which it finds only
            # once imported. json.loads below raises json's own, precise error.
            pass
    import json

    return json.loads(data)


def _no_default(obj: object) -> object:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _encode_string(text: str, ensure_ascii: bool) -> str:
    if _json is None:
        import json

        return json.dumps(text, ensure_ascii=ensure_ascii)
    return _json.encode_basestring_ascii(text) if ensure_ascii else _json.encode_basestring(text)


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def dumps(obj: object, *, indent: int | str | None = None, ensure_ascii: bool = True,
          sort_keys: bool = False) -> str:
    """json.dumps(obj, ...): compact separators (",", ":") without indent; json's indented layout with one."""
    if indent is None:
        if _json is None:
            import json

            return json.dumps(obj, ensure_ascii=ensure_ascii, separators=(",", ":"), sort_keys=sort_keys)
        encoder = _json.make_encoder(
            {}, _no_default, _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring,
            None, ":", ",", sort_keys, False, True)
        return "".join(encoder(obj, 0))
    step = " " * indent if isinstance(indent, int) else indent
    parts: list[str] = []
    _indented(obj, parts, step, "\n", ensure_ascii, sort_keys)
    return "".join(parts)


def _indented(obj: object, out: list[str], step: str, newline: str, ensure_ascii: bool,
              sort_keys: bool) -> None:
    """json's indented encoder: ",\\n" between items, ": " after keys, empty containers as {} / []."""
    if isinstance(obj, str):
        out.append(_encode_string(obj, ensure_ascii))
    elif obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        out.append(_float(obj))
    elif isinstance(obj, dict):
        if not obj:
            out.append("{}")
            return
        inner = newline + step
        out.append("{")
        for i, (key, value) in enumerate(sorted(obj.items()) if sort_keys else obj.items()):
            out.append(inner if i == 0 else "," + inner)
            if not isinstance(key, str):  # json.dumps's key coercion for the scalar key types
                key = dumps(key) if isinstance(key, (int, float, bool)) or key is None else _no_default(key)
            out.append(_encode_string(key, ensure_ascii))  # type: ignore[arg-type]
            out.append(": ")
            _indented(value, out, step, inner, ensure_ascii, sort_keys)
        out.append(newline + "}")
    elif isinstance(obj, (list, tuple)):
        if not obj:
            out.append("[]")
            return
        inner = newline + step
        out.append("[")
        for i, value in enumerate(obj):
            out.append(inner if i == 0 else "," + inner)
            _indented(value, out, step, inner, ensure_ascii, sort_keys)
        out.append(newline + "]")
    else:
        _no_default(obj)
