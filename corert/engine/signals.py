"""Signal names for `kill`: "KILL", "SIGKILL", "sigterm", "9", "RTMIN+3" -> number, as runc parses them."""
from __future__ import annotations

# The C module behind `signal`: the same constants without the Signals enum (enum costs ~4 ms of cold
# start on every `kill`).
import _signal

from corert.errors import UsageError

# Linux aliases of another signal's number: accepted by name, never printed.
_ALIASES = frozenset(("SIGIOT", "SIGPOLL", "SIGCLD"))
# Canonical names first, so that signal_name()/signal_names() pick them for a number.
_NAMES: dict[str, int] = dict(sorted(
    ((k, v) for k, v in vars(_signal).items()
     if k.startswith("SIG") and not k.startswith("SIG_") and isinstance(v, int)),
    key=lambda kv: (kv[1], kv[0] in _ALIASES)))

_RTMIN = _signal.SIGRTMIN
_RTMAX = _signal.SIGRTMAX
_MAX = _signal.NSIG - 1


def parse_signal(text: str) -> int:
    """A signal number from a name (any case, SIG prefix optional), RTMIN+n / RTMAX-n, or a number."""
    raw = text.strip()
    if raw.isdigit():
        num = int(raw)
        if 1 <= num <= _MAX:
            return num
        raise UsageError(f'unknown signal "{text}"')
    name = raw.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name in _NAMES:
        return _NAMES[name]
    for base, sign, origin in (("SIGRTMIN+", 1, _RTMIN), ("SIGRTMAX-", -1, _RTMAX)):
        if name.startswith(base) and name[len(base):].isdigit():
            num = origin + sign * int(name[len(base):])
            if _RTMIN <= num <= _RTMAX:
                return num
    raise UsageError(f'unknown signal "{text}"')


def signal_names() -> list[str]:
    """The signal names `kill` accepts (without the SIG prefix), in signal-number order."""
    by_num: dict[int, str] = {}
    for name, num in sorted(_NAMES.items(), key=lambda kv: kv[1]):
        by_num.setdefault(num, name[3:])
    return [by_num[n] for n in sorted(by_num)]


def signal_name(num: int) -> str:
    """"SIGKILL" for 9; "SIG<n>" when the number has no name."""
    for name, value in _NAMES.items():
        if value == num:
            return name
    return f"SIG{num}"
