"""cgroup v2 device access control: OCI device rules -> a BPF_PROG_TYPE_CGROUP_DEVICE program.

cgroup v2 has no devices.allow/deny files; the kernel asks an eBPF program attached to the cgroup
(struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor}) and allows when it returns 1.
The program is generated here as raw struct bpf_insn[] and loaded/attached with the bpf() syscall.
"""
from __future__ import annotations

import errno
import os
import struct
import sys

from corert.errors import ResourceError

from .convert import normalize_device_rule

# struct bpf_insn opcodes (linux/bpf.h, linux/bpf_common.h)
_LDX_W = 0x61          # BPF_LDX | BPF_MEM | BPF_W : dst = *(u32 *)(src + off)
_AND32_K = 0x54        # BPF_ALU | BPF_AND | BPF_K
_RSH32_K = 0x74        # BPF_ALU | BPF_RSH | BPF_K
_MOV32_X = 0xBC        # BPF_ALU | BPF_MOV | BPF_X
_MOV64_K = 0xB7        # BPF_ALU64 | BPF_MOV | BPF_K
_JNE_K = 0x55          # BPF_JMP | BPF_JNE | BPF_K
_EXIT = 0x95           # BPF_JMP | BPF_EXIT

_DEV_TYPE = {"b": 1, "c": 2}          # BPF_DEVCG_DEV_BLOCK / _CHAR
_ACCESS = {"m": 1, "r": 2, "w": 4}    # BPF_DEVCG_ACC_MKNOD / _READ / _WRITE

_BPF_PROG_LOAD, _BPF_PROG_ATTACH, _BPF_PROG_DETACH = 5, 8, 9
_BPF_PROG_GET_FD_BY_ID, _BPF_PROG_QUERY = 13, 16
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI = 2
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "ppc64": 361, "s390x": 351,
            "i686": 357, "i386": 357, "armv7l": 386, "loongarch64": 280}


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    regs = (src << 4) | dst if sys.byteorder == "little" else (dst << 4) | src
    if imm > 0x7FFFFFFF:
        imm -= 1 << 32
    return struct.pack("=BBhi", code, regs, off, imm)


def _rule_block(kind: str, major: int, minor: int, access: str, allow: bool) -> tuple[list[tuple], bool]:
    """Instructions for one rule: jumps past the block when it does not match, else return the verdict.

    Jumps are (code, dst, src, "skip", imm) placeholders patched once the block length is known.
    Returns (block, unconditional) — an unconditional rule makes everything checked after it unreachable.
    """
    block: list[tuple] = []
    if kind != "a":
        block.append((_JNE_K, 2, 0, "skip", _DEV_TYPE[kind]))
    mask = sum(_ACCESS[c] for c in access)
    if mask != 7:
        # The request matches only if it asks for no access outside the rule's set.
        block.append((_MOV32_X, 1, 3, 0, 0))
        block.append((_AND32_K, 1, 0, 0, ~mask & 0xFFFFFFFF))
        block.append((_JNE_K, 1, 0, "skip", 0))
    if major != -1:
        block.append((_JNE_K, 4, 0, "skip", major))
    if minor != -1:
        block.append((_JNE_K, 5, 0, "skip", minor))
    unconditional = not block
    block.append((_MOV64_K, 0, 0, 0, 1 if allow else 0))
    block.append((_EXIT, 0, 0, 0, 0))
    return block, unconditional


def device_rules_to_bpf(rules: list[dict]) -> bytes:
    """OCI linux.resources.devices -> struct bpf_insn[] bytes; default deny, the last matching rule wins."""
    normalized = [normalize_device_rule(rule, i) for i, rule in enumerate(rules or [])]
    out = [
        _insn(_LDX_W, 2, 1, 0),          # r2 = ctx->access_type
        _insn(_AND32_K, 2, imm=0xFFFF),  # r2 = device type
        _insn(_LDX_W, 3, 1, 0),          # r3 = ctx->access_type
        _insn(_RSH32_K, 3, imm=16),      # r3 = requested access
        _insn(_LDX_W, 4, 1, 4),          # r4 = ctx->major
        _insn(_LDX_W, 5, 1, 8),          # r5 = ctx->minor
    ]
    terminated = False
    for allow, kind, major, minor, access in reversed(normalized):   # later rules override earlier ones
        block, unconditional = _rule_block(kind, major, minor, access, allow)
        for i, (code, dst, src, off, imm) in enumerate(block):
            if off == "skip":
                off = len(block) - i - 1
            out.append(_insn(code, dst, src, off, imm))
        if unconditional:
            terminated = True   # the verifier rejects unreachable instructions: stop here
            break
    if not terminated:
        out.append(_insn(_MOV64_K, 0, imm=0))
        out.append(_insn(_EXIT))
    return b"".join(out)


# ---------------------------------------------------------------------------------------------- bpf()

def _bpf(cmd: int, attr) -> int:
    import ctypes

    nr = _SYS_BPF.get(os.uname().machine)
    if nr is None:
        raise ResourceError(f"linux.resources.devices: bpf() syscall number unknown on {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def load_device_program(insns: bytes) -> int:
    """BPF_PROG_LOAD a cgroup device program; returns its fd. The verifier log is in the error."""
    import ctypes

    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"Apache")
    log = ctypes.create_string_buffer(65536)
    for log_level in (0, 1):
        packed = struct.pack("=IIQQIIQII16sII", _BPF_PROG_TYPE_CGROUP_DEVICE, len(insns) // 8,
                             ctypes.addressof(code), ctypes.addressof(license_), log_level,
                             len(log) if log_level else 0, ctypes.addressof(log) if log_level else 0,
                             0, 0, b"corert_devices", 0, _BPF_CGROUP_DEVICE)
        attr = ctypes.create_string_buffer(packed, 128)
        try:
            return _bpf(_BPF_PROG_LOAD, attr)
        except OSError as e:
            if log_level == 0 and e.errno in (errno.EINVAL, errno.EACCES):
                continue   # load again with the verifier log, for a useful message
            detail = log.value.decode(errors="replace").strip().splitlines()
            tail = f" ({detail[-1]})" if detail else ""
            raise ResourceError(f"linux.resources.devices: BPF_PROG_LOAD failed: {e.strerror}{tail}") from None
    raise AssertionError("unreachable")


def _attached_ids(cgroup_fd: int) -> list[int]:
    import ctypes

    ids = (ctypes.c_uint32 * 64)()
    attr = ctypes.create_string_buffer(struct.pack("=IIIIQI", cgroup_fd, _BPF_CGROUP_DEVICE, 0, 0,
                                                   ctypes.addressof(ids), 64), 40)
    try:
        _bpf(_BPF_PROG_QUERY, attr)
    except OSError:
        return []
    count = struct.unpack_from("=I", attr.raw, 24)[0]
    return list(ids[: min(count, 64)])


def attach_device_filter(cgroup_dir: str, insns: bytes) -> None:
    """Load insns and make them the cgroup's device program, replacing programs we attached before."""
    import ctypes

    prog_fd = load_device_program(insns)
    try:
        try:
            cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ResourceError(f"linux.resources.devices: cannot open {cgroup_dir}: {e.strerror}") from None
        try:
            old = _attached_ids(cg_fd)
            try:
                _bpf(_BPF_PROG_ATTACH, ctypes.create_string_buffer(
                    struct.pack("=IIIII", cg_fd, prog_fd, _BPF_CGROUP_DEVICE, _BPF_F_ALLOW_MULTI, 0), 20))
            except OSError as e:
                if not old:
                    raise ResourceError(f"linux.resources.devices: BPF_PROG_ATTACH to {cgroup_dir} failed: "
                                        f"{e.strerror}") from None
                # An old program attached without ALLOW_MULTI: a plain attach replaces it.
                try:
                    _bpf(_BPF_PROG_ATTACH, ctypes.create_string_buffer(
                        struct.pack("=IIIII", cg_fd, prog_fd, _BPF_CGROUP_DEVICE, 0, 0), 20))
                except OSError as e2:
                    raise ResourceError(f"linux.resources.devices: BPF_PROG_ATTACH to {cgroup_dir} failed: "
                                        f"{e2.strerror}") from None
                return
            for prog_id in old:
                try:
                    old_fd = _bpf(_BPF_PROG_GET_FD_BY_ID, ctypes.create_string_buffer(
                        struct.pack("=III", prog_id, 0, 0), 12))
                except OSError:
                    continue
                try:
                    _bpf(_BPF_PROG_DETACH, ctypes.create_string_buffer(
                        struct.pack("=IIIII", cg_fd, old_fd, _BPF_CGROUP_DEVICE, 0, 0), 20))
                except OSError:
                    pass
                finally:
                    os.close(old_fd)
        finally:
            os.close(cg_fd)
    finally:
        os.close(prog_fd)
