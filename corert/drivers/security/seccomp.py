"""OCI `linux.seccomp` -> classic BPF bytes (struct sock_filter[]), compiled by libseccomp and cached on disk.

The fast path loads the bytes with seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog) as the last step before
execve. Compiling costs an import of pyseccomp plus libseccomp's work; the result only depends on the
profile, the libseccomp build and the machine, so it is cached under that key and a warm start never
imports pyseccomp (hot path: stdlib only at top level).
"""
from __future__ import annotations

import os
import struct

from corert import jsonio
from corert._record import Record, Required
from corert.errors import ConfigError, HostUnsupported
from corert.fsutil import write_atomic

# Action values are the kernel's SECCOMP_RET_* (libseccomp uses them as is), kept here so validation
# and the cache-hit path need no libseccomp.
_RET_ERRNO = 0x00050000
_RET_TRACE = 0x7FF00000
_RET_NOTIFY = 0x7FC00000
_ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,          # = KILL_THREAD, as libseccomp defines it
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": _RET_ERRNO,
    "SCMP_ACT_TRACE": _RET_TRACE,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_NOTIFY": _RET_NOTIFY,
}
_ACTIONS_WITH_DATA = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
_EPERM = 1
_ENOSYS = 38

_OPS: dict[str, int] = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,   # (arg & value) == valueTwo
}

# libseccomp arch tokens: AUDIT_ARCH_* (ELF machine | 64-bit | little-endian bits), except x32.
_64 = 0x80000000
_LE = 0x40000000
_N32 = 0x20000000
_AUDIT_X86_64 = 62 | _64 | _LE
_ARCHES: dict[str, int] = {
    "SCMP_ARCH_X86": 3 | _LE,
    "SCMP_ARCH_X86_64": _AUDIT_X86_64,
    "SCMP_ARCH_X32": 62 | _LE,            # libseccomp's token; the kernel reports x32 as AUDIT_ARCH_X86_64
    "SCMP_ARCH_ARM": 40 | _LE,
    "SCMP_ARCH_AARCH64": 183 | _64 | _LE,
    "SCMP_ARCH_MIPS": 8,
    "SCMP_ARCH_MIPS64": 8 | _64,
    "SCMP_ARCH_MIPS64N32": 8 | _64 | _N32,
    "SCMP_ARCH_MIPSEL": 8 | _LE,
    "SCMP_ARCH_MIPSEL64": 8 | _64 | _LE,
    "SCMP_ARCH_MIPSEL64N32": 8 | _64 | _LE | _N32,
    "SCMP_ARCH_PPC": 20,
    "SCMP_ARCH_PPC64": 21 | _64,
    "SCMP_ARCH_PPC64LE": 21 | _64 | _LE,
    "SCMP_ARCH_S390": 22,
    "SCMP_ARCH_S390X": 22 | _64,
    "SCMP_ARCH_PARISC": 15,
    "SCMP_ARCH_PARISC64": 15 | _64,
    "SCMP_ARCH_RISCV64": 243 | _64 | _LE,
    "SCMP_ARCH_LOONGARCH64": 258 | _64 | _LE,
    "SCMP_ARCH_M68K": 4,
    "SCMP_ARCH_SH": 42 | _LE,
    "SCMP_ARCH_SHEB": 42,
}
_X32_SYSCALL_BIT = 0x40000000

# seccomp(2) SECCOMP_FILTER_FLAG_* the profile may ask for.
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_LOG = 2
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 16
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 32
_FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": SECCOMP_FILTER_FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_TSYNC_ESRCH": SECCOMP_FILTER_FLAG_TSYNC_ESRCH,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}

BPF_MAXINSNS = 4096
_SOCK_FILTER = struct.Struct("=HBBI")  # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}

# Bump when the compiler's output for the same input changes, so old cache entries are not used.
_FORMAT_VERSION = "corert-seccomp-2"
# Keys that do not change the filter; left out of the cache key so they do not split the cache.
_NON_FILTER_KEYS = ("listenerPath", "listenerMetadata")


class CompiledSeccomp(Record):
    """A loadable filter: `bpf` is struct sock_filter[] (8 bytes each); `flags` is what to pass to
    seccomp(SECCOMP_SET_MODE_FILTER, flags, ...) and already includes SECCOMP_FILTER_FLAG_NEW_LISTENER
    when `needs_listener` (a rule uses SCMP_ACT_NOTIFY: the caller must hand the listener fd to
    listenerPath). `skipped` names syscalls libseccomp does not know here (ignored, as runc does)."""

    FIELDS = {"bpf": Required, "needs_listener": Required, "flags": Required, "skipped": ()}
    __slots__ = tuple(FIELDS)

    @property
    def instructions(self) -> int:
        return len(self.bpf) // _SOCK_FILTER.size


class _Rule:
    """One validated syscalls[] entry (plain class: only built on a cache miss, no dataclass setup cost)."""

    __slots__ = ("path", "names", "action", "conds")

    def __init__(self, path: str, names: list[str], action: int, conds: list[tuple[int, int, int, int]]) -> None:
        self.path = path        # JSON path of the entry, for error messages
        self.names = names
        self.action = action
        self.conds = conds      # (index, op, value, valueTwo)


class _Profile:
    __slots__ = ("default_action", "arches", "flags", "needs_listener", "rules")

    def __init__(self, default_action: int, arches: list[int], flags: int, needs_listener: bool,
                 rules: list[_Rule]) -> None:
        self.default_action = default_action
        self.arches = arches
        self.flags = flags
        self.needs_listener = needs_listener
        self.rules = rules


def compile_seccomp(profile: dict, cache_dir: str | os.PathLike[str] | None, *, json_path: str = "linux.seccomp") -> CompiledSeccomp:
    """Compile an OCI seccomp object to BPF; reuse cache_dir/<key>.bpf when present (no pyseccomp import)."""
    key = None
    if cache_dir is not None:
        key = _cache_key(profile, json_path)
        hit = _cache_read(os.fspath(cache_dir), key)
        if hit is not None:
            return hit
    parsed = _parse(profile, json_path)
    compiled = _compile(parsed, json_path)
    if cache_dir is not None and key is not None:
        _cache_write(os.fspath(cache_dir), key, compiled)
    return compiled


# ---------------------------------------------------------------------------------------------------
# Validation (pure Python): every error names its JSON path.

def _uint(value: object, path: str, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise ConfigError(path, f"must be an integer in 0..{(1 << bits) - 1}")
    return value


def _action(name: object, errno_ret: object, path: str, errno_path: str, default_errno: int) -> int:
    if not isinstance(name, str) or name not in _ACTIONS:
        raise ConfigError(path, f"unknown seccomp action {name!r}")
    value = _ACTIONS[name]
    if name in _ACTIONS_WITH_DATA:
        errno_value = default_errno if errno_ret is None else _uint(errno_ret, errno_path, 16)
        return value | errno_value
    if errno_ret is not None:
        raise ConfigError(errno_path, f"only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {name}")
    return value


def _parse(profile: object, path: str) -> _Profile:
    if not isinstance(profile, dict):
        raise ConfigError(path, "must be an object")
    default_errno = _EPERM
    if profile.get("defaultErrnoRet") is not None:
        default_errno = _uint(profile["defaultErrnoRet"], f"{path}.defaultErrnoRet", 16)
    if "defaultAction" not in profile:
        raise ConfigError(f"{path}.defaultAction", "is required")
    default_action = _action(profile["defaultAction"], profile.get("defaultErrnoRet"),
                             f"{path}.defaultAction", f"{path}.defaultErrnoRet", _EPERM)
    if profile["defaultAction"] == "SCMP_ACT_NOTIFY":
        raise ConfigError(f"{path}.defaultAction", "SCMP_ACT_NOTIFY cannot be the default action")

    arches: list[int] = []
    raw_arches = profile.get("architectures") or []
    if not isinstance(raw_arches, list):
        raise ConfigError(f"{path}.architectures", "must be a list")
    for i, name in enumerate(raw_arches):
        if not isinstance(name, str) or name not in _ARCHES:
            raise ConfigError(f"{path}.architectures[{i}]", f"unknown architecture {name!r}")
        if _ARCHES[name] not in arches:
            arches.append(_ARCHES[name])

    flags = 0
    raw_flags = profile.get("flags") or []
    if not isinstance(raw_flags, list):
        raise ConfigError(f"{path}.flags", "must be a list")
    for i, name in enumerate(raw_flags):
        if name == "SECCOMP_FILTER_FLAG_NEW_LISTENER":
            raise ConfigError(f"{path}.flags[{i}]", "is implied by SCMP_ACT_NOTIFY rules, do not set it")
        if not isinstance(name, str) or name not in _FLAGS:
            raise ConfigError(f"{path}.flags[{i}]", f"unknown seccomp flag {name!r}")
        flags |= _FLAGS[name]

    rules: list[_Rule] = []
    needs_listener = False
    raw_syscalls = profile.get("syscalls") or []
    if not isinstance(raw_syscalls, list):
        raise ConfigError(f"{path}.syscalls", "must be a list")
    for i, entry in enumerate(raw_syscalls):
        epath = f"{path}.syscalls[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(epath, "must be an object")
        names = entry.get("names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"{epath}.names", "must be a non-empty list of syscall names")
        if "action" not in entry:
            raise ConfigError(f"{epath}.action", "is required")
        action = _action(entry["action"], entry.get("errnoRet"), f"{epath}.action", f"{epath}.errnoRet",
                         default_errno if entry["action"] == "SCMP_ACT_ERRNO" else _EPERM)
        needs_listener |= entry["action"] == "SCMP_ACT_NOTIFY"
        conds = []
        raw_args = entry.get("args") or []
        if not isinstance(raw_args, list) or len(raw_args) > 6:
            raise ConfigError(f"{epath}.args", "must be a list of at most 6 conditions")
        for j, arg in enumerate(raw_args):
            apath = f"{epath}.args[{j}]"
            if not isinstance(arg, dict):
                raise ConfigError(apath, "must be an object")
            index = _uint(arg.get("index"), f"{apath}.index", 3)
            if index > 5:
                raise ConfigError(f"{apath}.index", "must be in 0..5")
            op = arg.get("op")
            if not isinstance(op, str) or op not in _OPS:
                raise ConfigError(f"{apath}.op", f"unknown seccomp operator {op!r}")
            conds.append((index, _OPS[op], _uint(arg.get("value", 0), f"{apath}.value", 64),
                          _uint(arg.get("valueTwo", 0), f"{apath}.valueTwo", 64)))
        rules.append(_Rule(epath, list(names), action, conds))

    if needs_listener:
        # The kernel refuses TSYNC with a listener (without TSYNC_ESRCH); the container init is
        # single-threaded when it loads the filter, so TSYNC has nothing to do anyway.
        flags = (flags & ~(SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_TSYNC_ESRCH)) | SECCOMP_FILTER_FLAG_NEW_LISTENER
    return _Profile(default_action, arches, flags, needs_listener, rules)


# ---------------------------------------------------------------------------------------------------
# Compilation (cache miss only): libseccomp builds the filter, we prepend the -ENOSYS stub.

def _compile(profile: _Profile, path: str) -> CompiledSeccomp:
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError) as e:  # RuntimeError: pyseccomp found no libseccomp
        raise HostUnsupported(f"seccomp needs pyseccomp and libseccomp: {e}") from None

    try:
        filt = sc.SyscallFilter(profile.default_action)
    except OSError as e:
        raise ConfigError(f"{path}.defaultAction", f"libseccomp refused it: {e.strerror}") from None
    try:
        # Binary-tree dispatch: an allow-list of ~350 syscalls costs a few compares, not hundreds.
        filt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
    except OSError:
        pass
    for i, arch in enumerate(profile.arches):
        try:
            if not filt.exist_arch(arch):
                filt.add_arch(arch)
        except OSError as e:
            import errno

            why = ("has a different byte order than the other architectures" if e.errno == errno.EDOM
                   else f"is not supported by this libseccomp ({e.strerror})")
            raise ConfigError(f"{path}.architectures[{i}]", why) from None

    skipped: list[str] = []
    used: set[str] = set()
    for rule in profile.rules:
        # Several conditions on the same argument cannot be ANDed by libseccomp; runc (and every
        # profile written for it) reads them as alternatives: one rule per condition.
        indexes = [c[0] for c in rule.conds]
        groups = [[c] for c in rule.conds] if len(set(indexes)) != len(indexes) else [rule.conds]
        for name in rule.names:
            nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
            if nr == -1:  # __NR_SCMP_ERROR: not a syscall libseccomp knows for this arch
                if name not in skipped:
                    skipped.append(name)
                continue
            used.add(name)
            if rule.action == profile.default_action:
                continue  # libseccomp refuses rules that repeat the default (EACCES); they change nothing
            for conds in groups:
                args = [sc.Arg(index, op, a, b) for index, op, a, b in conds]
                try:
                    filt.add_rule(rule.action, nr, *args)
                except OSError as e:
                    raise ConfigError(rule.path, f"libseccomp refused the rule for {name!r}: {e.strerror}") from None

    fd = os.memfd_create("corert-seccomp", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as f:
            filt.export_bpf(f)
        size = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, 0, os.SEEK_SET)
        program = _read_exact(fd, size)
    finally:
        os.close(fd)

    stub = b""
    if profile.default_action not in (_ACTIONS["SCMP_ACT_ALLOW"], _ACTIONS["SCMP_ACT_LOG"]):
        # libseccomp always keeps the native arch in the filter, listed or not.
        arches = [sc.system_arch()] + [a for a in profile.arches if a != sc.system_arch()]
        stub = _enosys_stub(sc, arches, sorted(used))
    bpf = stub + program
    if len(bpf) % _SOCK_FILTER.size or not bpf:
        raise ConfigError(path, f"libseccomp produced an invalid program ({len(bpf)} bytes)")
    if len(bpf) // _SOCK_FILTER.size > BPF_MAXINSNS:
        raise ConfigError(path, f"filter has {len(bpf) // _SOCK_FILTER.size} instructions, the kernel allows {BPF_MAXINSNS}")
    return CompiledSeccomp(bpf, profile.needs_listener, profile.flags, tuple(skipped))


def _read_exact(fd: int, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.read(fd, size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


# Classic BPF opcodes used by the stub.
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGT_K = 0x25
_JGE_K = 0x35
_JA = 0x05
_RET_K = 0x06
_OFF_NR = 0
_OFF_ARCH = 4


def _enosys_stub(sc: object, arches: list[int], names: list[str]) -> bytes:
    """Instructions that answer -ENOSYS for syscall numbers above the highest one the profile names.

    Without it, a syscall newer than the profile gets the default action (EPERM), and libcs that probe
    new syscalls (clone3, faccessat2, fchmodat2, ...) only fall back on ENOSYS. Same idea as runc's
    patchbpf. Per audit arch: `nr > max -> ENOSYS`; x32 shares AUDIT_ARCH_X86_64 and is told apart
    by the X32 bit in nr."""
    maxima: dict[int, int] = {}
    for arch in arches:
        best = -1
        for name in names:
            nr = sc.resolve_syscall(arch, name)  # type: ignore[attr-defined]
            if nr >= 0:
                best = max(best, nr)
        if best >= 0:
            maxima[arch] = best
    x32 = maxima.pop(_ARCHES["SCMP_ARCH_X32"], None)
    if x32 is not None and _AUDIT_X86_64 not in maxima:
        maxima[_AUDIT_X86_64] = _X32_SYSCALL_BIT - 1  # x32 only: leave native x86_64 numbers to libseccomp
    if not maxima:
        return b""

    # Symbolic program: (code, jt, jf, k) where jt/jf are labels ("enosys", "orig", "next") or 0.
    blocks: list[list[tuple]] = []
    for audit, top in maxima.items():
        body: list[tuple] = [(_LD_W_ABS, 0, 0, _OFF_NR)]
        if audit == _AUDIT_X86_64:
            if x32 is not None:
                body.append((_JGE_K, 1, 0, _X32_SYSCALL_BIT))      # x32 number -> the x32 check
                body.append((_JGT_K, "enosys", "orig", top))
                body.append((_JGT_K, "enosys", "orig", x32))
            else:
                body.append((_JGE_K, "orig", 0, _X32_SYSCALL_BIT))  # x32 not allowed: libseccomp decides
                body.append((_JGT_K, "enosys", "orig", top))
        else:
            body.append((_JGT_K, "enosys", "orig", top))
        blocks.append([(_JEQ_K, 0, "next", audit)] + body)

    symbolic: list[tuple] = [(_LD_W_ABS, 0, 0, _OFF_ARCH)]
    next_at: list[int] = []
    for block in blocks:
        symbolic.extend(block)
        next_at.append(len(symbolic))
    symbolic.append((_JA, 0, 0, "orig"))
    enosys_at = len(symbolic)
    symbolic.append((_RET_K, 0, 0, _RET_ERRNO | _ENOSYS))
    orig_at = len(symbolic)

    out = bytearray()
    block_no = -1
    for i, (code, jt, jf, k) in enumerate(symbolic):
        if code == _JEQ_K and jf == "next":
            block_no += 1

        def resolve(target: object) -> int:
            if target == "enosys":
                return enosys_at - i - 1
            if target == "orig":
                return orig_at - i - 1
            if target == "next":
                return next_at[block_no] - i - 1
            return int(target)  # type: ignore[arg-type]

        if code == _JA:
            out += _SOCK_FILTER.pack(code, 0, 0, resolve(k))
        else:
            out += _SOCK_FILTER.pack(code, resolve(jt), resolve(jf), k)
    return bytes(out)


# ---------------------------------------------------------------------------------------------------
# Cache: <key>.bpf (raw program) + <key>.json (flags, listener, skipped, sha256 of the program).

def _sha256(data: bytes = b"") -> object:
    """hashlib.sha256 without hashlib's OpenSSL import (~3 ms of a warm start) when the builtin is there."""
    try:
        from _sha256 import sha256  # CPython <= 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[no-redef]  # CPython >= 3.12
        except ImportError:
            from hashlib import sha256
    return sha256(data)


def _libseccomp_id() -> str:
    """Which libseccomp build would compile the profile, found without loading it (cheap, on every start)."""
    import sys

    multiarch = getattr(sys.implementation, "_multiarch", "")
    dirs = [f"/usr/lib/{multiarch}", f"/lib/{multiarch}", "/usr/lib64", "/lib64", "/usr/lib", "/usr/local/lib"]
    for d in dirs:
        candidate = os.path.join(d, "libseccomp.so.2")
        try:
            real = os.path.realpath(candidate)
            st = os.stat(real)
        except OSError:
            continue
        return f"{os.path.basename(real)}:{st.st_size}:{st.st_mtime_ns}"
    return "libseccomp:unknown"


def _cache_key(profile: object, path: str) -> str:
    if not isinstance(profile, dict):
        raise ConfigError(path, "must be an object")
    relevant = {k: v for k, v in profile.items() if k not in _NON_FILTER_KEYS}
    try:
        canonical = jsonio.dumps(relevant, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(path, f"is not plain JSON data: {e}") from None
    h = _sha256()
    for part in (_FORMAT_VERSION, _libseccomp_id(), os.uname().machine, canonical):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _read_private(path: str) -> bytes | None:
    """The file's bytes if it is a regular file we own that nobody else can write (no cache poisoning)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        return _read_exact(fd, st.st_size)
    finally:
        os.close(fd)


def _cache_read(cache_dir: str, key: str) -> CompiledSeccomp | None:
    bpf = _read_private(os.path.join(cache_dir, f"{key}.bpf"))
    raw_meta = _read_private(os.path.join(cache_dir, f"{key}.json"))
    if not bpf or raw_meta is None or len(bpf) % _SOCK_FILTER.size:
        return None
    try:
        meta = jsonio.loads(raw_meta)
        flags, listener, skipped, digest = meta["flags"], meta["needs_listener"], meta["skipped"], meta["sha256"]
    except (ValueError, KeyError, TypeError):
        return None
    if _sha256(bpf).hexdigest() != digest or not isinstance(flags, int) or not isinstance(listener, bool):
        return None  # torn or foreign entry: recompile
    return CompiledSeccomp(bpf, listener, flags, tuple(skipped))


def _cache_write(cache_dir: str, key: str, compiled: CompiledSeccomp) -> None:
    """Best effort: a cache that cannot be written (read-only, full) only costs the next start a compile."""
    meta = {
        "flags": compiled.flags,
        "needs_listener": compiled.needs_listener,
        "skipped": list(compiled.skipped),
        "sha256": _sha256(compiled.bpf).hexdigest(),
    }
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        write_atomic(os.path.join(cache_dir, f"{key}.json"), jsonio.dumps(meta).encode())
        write_atomic(os.path.join(cache_dir, f"{key}.bpf"), compiled.bpf)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------------
# corert's default profile.

_DEFAULT_PROFILE = os.path.join(os.path.dirname(__file__), "default_seccomp.json")


def load_default_profile(machine: str | None = None) -> dict:
    """corert's default `linux.seccomp` object for this host (or for `machine`, an os.uname().machine value):
    the allow-list from default_seccomp.json with the architectures a process on that machine can use."""
    with open(_DEFAULT_PROFILE, "rb") as f:
        data = jsonio.loads(f.read())
    machine = machine or os.uname().machine
    profile = data["profile"]
    arch_map = data["archMap"]
    key = machine if machine in arch_map else ("arm" if machine.startswith("arm") else
                                               "x86" if machine in ("i386", "i486", "i586", "i686") else None)
    profile["architectures"] = list(arch_map[key]) if key else []
    if machine.startswith("s390"):
        # s390 passes clone's flags in the second argument (stack first).
        for entry in profile["syscalls"]:
            if entry["names"] == ["clone"]:
                for arg in entry.get("args", []):
                    arg["index"] = 1
    return profile
