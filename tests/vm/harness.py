"""Run a command inside a qemu guest that has a pure cgroup v2 hierarchy (the host here is hybrid).

The guest boots Debian's own kernel (fetched with `apt-get download`, never installed) under TCG, with
a busybox initramfs whose /init (tests/vm/init.sh) mounts the host's / read-only over 9p with a tmpfs
overlay on top, mounts cgroup2 at /sys/fs/cgroup with every controller delegated to the root's
children, chroots into that root, runs the command and reports its exit status. Writes inside the
guest never reach the host, except in `share` dirs (mounted read-write at the same path) and the
control dir.

Assets are cached under $CORERT_VM_CACHE (default /var/tmp/corert-vm) and rebuilt when missing:
  <KVER>/             the extracted kernel .deb (boot/, lib/modules/ with our depmod output)
  <KVER>/vmlinux      the decompressed kernel: an ELF with a PVH note, booted directly by qboot, which
                      skips firmware and in-guest xz decompression (about 3 s of a TCG boot)
  initramfs-<key>.cpio.gz   busybox + modules + init.sh; the key hashes everything that goes in

CLI: python tests/vm/harness.py [-w DIR]... [--disk-mb N] [--env NAME]... -- CMD [ARG]...
"""
from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import lzma
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "init.sh"
CACHE = Path(os.environ.get("CORERT_VM_CACHE", "/var/tmp/corert-vm"))
QEMU = "qemu-system-x86_64"
QBOOT = Path("/usr/share/qemu/qboot.rom")
BUSYBOX = Path(shutil.which("busybox") or "/bin/busybox")
# What the initramfs must be able to mount: virtio-pci transport, 9p over virtio, overlayfs, and the
# virtio disk used by the io.max tests. Their dependencies are taken from modules.dep.
INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_blk")
CMDLINE = ("console=ttyS0 quiet loglevel=1 mitigations=off panic=-1 "
           "cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1")


class VmError(RuntimeError):
    """The VM could not be prepared or did not report an exit status."""


@dataclass
class VmResult:
    returncode: int
    output: str          # the serial console (guest command's stdout+stderr), CRs stripped
    seconds: float       # qemu launch -> poweroff
    boot_seconds: float  # guest uptime when the command started (kernel + init), -1 if unknown


# -- assets -----------------------------------------------------------------------------------------
def _lock(cache: Path):
    """An exclusive lock on the cache dir, so concurrent test runs build assets once."""
    cache.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def kernel_package() -> str:
    """The binary kernel package linux-image-amd64 points at (e.g. linux-image-6.1.0-56-amd64)."""
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        dep = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and dep.startswith("linux-image-") and dep.endswith("-amd64"):
            return dep
    raise VmError("apt-cache knows no linux-image-amd64 dependency (run apt-get update?)")


def _fetch_kernel(cache: Path) -> Path:
    """Download and unpack the kernel .deb; returns <cache>/<KVER>."""
    package = kernel_package()
    kver = package.removeprefix("linux-image-")
    root = cache / kver
    if (root / "vmlinux").is_file():
        return root
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        got = subprocess.run(["apt-get", "download", "-q", package], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob(f"{package}_*.deb"))
        if got.returncode != 0 or not debs:
            raise VmError(f"apt-get download {package} failed: {got.stderr.strip()}")
        deb = debs[0]
        staged = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(staged)], check=True)
        # busybox modprobe in the guest and our initramfs builder both read modules.dep.
        subprocess.run([str(BUSYBOX), "depmod", "-b", str(staged), kver], check=True)
        (staged / "vmlinux").write_bytes(_decompress_bzimage((staged / "boot" / f"vmlinuz-{kver}").read_bytes()))
        shutil.rmtree(root, ignore_errors=True)
        staged.rename(root)
    for other in cache.iterdir():      # a kernel Debian has since replaced
        if other != root and (other / "vmlinux").is_file():
            shutil.rmtree(other, ignore_errors=True)
    return root


def _decompress_bzimage(image: bytes) -> bytes:
    """The vmlinux ELF inside a bzImage (Debian amd64 compresses it with xz; gzip handled too)."""
    for magic, decompress in ((b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor().decompress(b)),
                              (b"\x1f\x8b\x08", lambda b: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(b))):
        start = image.find(magic)
        while start >= 0:
            try:
                elf = decompress(image[start:])
            except (lzma.LZMAError, zlib.error):
                elf = b""
            if elf.startswith(b"\x7fELF"):
                return elf
            start = image.find(magic, start + 1)
    raise VmError("no xz/gzip-compressed vmlinux found in the kernel image")


def _module_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """Module files to insmod, dependencies first (from modules.dep)."""
    deps: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        if ":" in line:
            path, rest = line.split(":", 1)
            deps[path] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise VmError(f"kernel module {name} not found in {modules_dir} (built in? then drop it)")
        visit(by_name[name])
    return [modules_dir / p for p in order]


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """An initramfs archive (cpio "newc"): entries are (path, mode, data); symlink data = its target."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        out.extend(b"070701" + "".join(f"{v:08X}" for v in fields).encode())
        out.extend(name.encode() + b"\0")
        pad()
        out.extend(data)
        pad()
    return bytes(out)


def _build_initramfs(kernel_root: Path, kver: str, dest: Path) -> None:
    modules_dir = kernel_root / "lib" / "modules" / kver
    entries: list[tuple[str, int, bytes]] = [(d, 0o040755, b"") for d in
                                             ("bin", "dev", "proc", "sys", "mods", "ctl", "lower", "ovl",
                                              "newroot")]
    entries.append(("bin/busybox", 0o100755, BUSYBOX.read_bytes()))
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    # (`busybox --list` names busybox itself: linking it would replace the binary by a loop)
    entries += [(f"bin/{a}", 0o120777, b"busybox") for a in applets if a != "busybox"]
    for i, module in enumerate(_module_order(modules_dir, INITRAMFS_MODULES)):
        data = module.read_bytes()
        if module.suffix == ".xz":        # busybox insmod takes plain .ko files
            data = lzma.decompress(data)
        entries.append((f"mods/{i:02d}-{module.name.split('.ko')[0]}.ko", 0o100644, data))
    entries.append(("init", 0o100755, INIT_SCRIPT.read_bytes()))
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=1))
    tmp.rename(dest)


def ensure_assets(cache: Path = CACHE) -> tuple[Path, Path, Path]:
    """(vmlinux, initramfs, guest /lib/modules dir), building whatever is missing from the cache."""
    lock = _lock(cache)
    try:
        kernel_root = _fetch_kernel(cache)
        kver = kernel_root.name
        key = hashlib.sha256(INIT_SCRIPT.read_bytes() + BUSYBOX.read_bytes() + kver.encode()
                             + ",".join(INITRAMFS_MODULES).encode()).hexdigest()[:16]
        initramfs = cache / f"initramfs-{key}.cpio.gz"
        if not initramfs.is_file():
            for old in cache.glob("initramfs-*.cpio.gz"):
                old.unlink()
            _build_initramfs(kernel_root, kver, initramfs)
        return kernel_root / "vmlinux", initramfs, kernel_root / "lib" / "modules"
    finally:
        os.close(lock)


# -- running ----------------------------------------------------------------------------------------
def missing_host_tools() -> list[str]:
    return [t for t in (QEMU, "apt-get", "dpkg-deb", str(BUSYBOX)) if not shutil.which(t)] + \
        ([str(QBOOT)] if not QBOOT.is_file() else [])


def run(argv: list[str], *, cwd: str | None = None, env: dict[str, str] | None = None,
        share: list[str] = (), disk_mb: int = 0, memory_mb: int = 1024, timeout: float = 600) -> VmResult:
    """Boot the guest, run argv (cwd, env on top of PATH/HOME/LANG) and return its exit status + output.

    share: host dirs mounted read-write at the same path in the guest. disk_mb: attach a sparse raw
    scratch disk as /dev/vda (virtio-blk), e.g. for io.max.
    """
    vmlinux, initramfs, modules = ensure_assets()
    ctl = Path(tempfile.mkdtemp(prefix="corert-vm-ctl."))
    try:
        lines = [f"export PATH={shlex.quote(os.environ.get('PATH', '/usr/bin:/bin'))} HOME=/root "
                 f"LANG=C.UTF-8 TERM=dumb"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in (env or {}).items()]
        lines += [f"cd {shlex.quote(cwd or os.getcwd())} || exit 125", "exec " + shlex.join(argv)]
        (ctl / "cmd.sh").write_text("\n".join(lines) + "\n")
        (ctl / "vm.env").write_text(f"KMODDIR={shlex.quote(str(modules))}\n")
        virtfs = ["-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,"
                             "multidevs=remap,id=hostroot",
                  "-virtfs", f"local,path={ctl},mount_tag=ctl,security_model=passthrough,id=ctl"]
        mounts = []
        for i, d in enumerate(share):
            d = os.path.realpath(d)
            virtfs += ["-virtfs", f"local,path={d},mount_tag=w{i},security_model=passthrough,multidevs=remap,"
                                  f"id=w{i}"]
            mounts.append(f"w{i} {d}")
        (ctl / "mounts").write_text("".join(m + "\n" for m in mounts))
        disk = []
        if disk_mb:
            with open(ctl / "disk.img", "wb") as f:
                f.truncate(disk_mb << 20)
            disk = ["-drive", f"file={ctl / 'disk.img'},if=virtio,format=raw,cache=unsafe"]
        # TCG: this host's /dev/kvm (kvm_pvm) cannot run a stock kernel; one vCPU (MTTCG does not help).
        cmd = [QEMU, "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", str(memory_mb), "-nographic",
               "-nodefaults", "-serial", "stdio", "-no-reboot", "-net", "none", "-bios", str(QBOOT),
               "-kernel", str(vmlinux), "-initrd", str(initramfs), "-append", CMDLINE, *virtfs, *disk]
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout)
            output = proc.stdout.decode(errors="replace").replace("\r", "")
        except subprocess.TimeoutExpired as e:   # subprocess.run killed qemu
            output = (e.stdout or b"").decode(errors="replace").replace("\r", "")
            raise VmError(f"the VM did not power off within {timeout:.0f} s:\n{output}") from None
        seconds = time.monotonic() - started
        rc_file, boot_file = ctl / "rc", ctl / "boot"
        if not rc_file.is_file():
            raise VmError(f"the guest reported no exit status (qemu exited {proc.returncode}):\n{output}")
        boot = float(boot_file.read_text().split()[0]) if boot_file.is_file() else -1.0
        return VmResult(int(rc_file.read_text()), output, seconds, boot)
    finally:
        shutil.rmtree(ctl, ignore_errors=True)


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--share", action="append", default=[], help="host dir to mount read-write")
    parser.add_argument("--disk-mb", type=int, default=0, help="attach a scratch virtio disk of this size")
    parser.add_argument("--memory-mb", type=int, default=1024)
    parser.add_argument("--env", action="append", default=[], help="pass this host variable into the guest")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    ns = parser.parse_args(args)
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    if not command:
        parser.error("no command given")
    env = {k: os.environ[k] for k in ns.env if k in os.environ}
    try:
        result = run(command, env=env, share=ns.share, disk_mb=ns.disk_mb, memory_mb=ns.memory_mb,
                     timeout=ns.timeout)
    except VmError as e:
        print(f"harness: {e}", file=sys.stderr)
        return 124
    sys.stdout.write(result.output)
    print(f"harness: exit {result.returncode}, guest boot {result.boot_seconds:.1f} s, "
          f"total {result.seconds:.1f} s", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
