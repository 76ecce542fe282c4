"""Rootless mode: what an unprivileged user's containers get, and what the host must offer for it.

Root inside the container maps to the user outside. With a range in /etc/subuid and /etc/subgid and the
setuid helpers newuidmap/newgidmap (Debian `uidmap`), the container gets a full 65536-id map; otherwise a
single-id map, which still runs most images but leaves every other id unmapped (files owned by them show
as nobody, and setgroups is denied).
"""
from __future__ import annotations

import os

from corert.errors import HostUnsupported, ResourceError
from corert.fsutil import copy_to_fd, write_all

FULL_MAP_SIZE = 65536


def subid_ranges(path: str, *names: str) -> list[tuple[int, int]]:
    """[(start, count)] of the entries for any of `names` (user names or uids) in an /etc/subuid-format
    file, in file order."""
    ranges = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in names and parts[1].isdigit() and parts[2].isdigit():
                    ranges.append((int(parts[1]), int(parts[2])))
    except OSError:
        pass
    return ranges


def id_mappings() -> tuple[list[dict], list[dict], str | None]:
    """(uidMappings, gidMappings, note): the widest map this user may have, and a note when it is narrow."""
    import pwd     # here, not at the top: this module is also on rootless `delete`'s path
    import shutil

    uid, gid = os.geteuid(), os.getegid()
    single_u = [{"containerID": 0, "hostID": uid, "size": 1}]
    single_g = [{"containerID": 0, "hostID": gid, "size": 1}]
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:   # no readable passwd entry: trust the login environment (subid files match names)
        user = os.environ.get("USER") or os.environ.get("LOGNAME") or str(uid)
    subuid = next(iter(subid_ranges("/etc/subuid", user, str(uid))), None)
    subgid = next(iter(subid_ranges("/etc/subgid", user, str(uid))), None)
    helpers = shutil.which("newuidmap", path="/usr/bin:/bin") and shutil.which("newgidmap", path="/usr/bin:/bin")
    if subuid and subgid and helpers:
        size_u = min(subuid[1], FULL_MAP_SIZE - 1)
        size_g = min(subgid[1], FULL_MAP_SIZE - 1)
        return (single_u + [{"containerID": 1, "hostID": subuid[0], "size": size_u}],
                single_g + [{"containerID": 1, "hostID": subgid[0], "size": size_g}], None)
    if not (subuid and subgid):
        why = f"no range for {user} in /etc/subuid and /etc/subgid (fix: `usermod --add-subuids 100000-165535 " \
              f"--add-subgids 100000-165535 {user}` as root)"
    else:
        why = "newuidmap/newgidmap are missing (fix: install Debian's `uidmap` package)"
    note = (f"rootless: single-id user namespace, only uid/gid 0 exist in the container: {why}")
    return single_u, single_g, note


def check_host(storage: str | None) -> None:
    """Refuse early, with the fix, when the host cannot give this user a container."""
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            if int(f.read()) == 0:
                raise HostUnsupported("user namespaces are disabled (fix: `sysctl -w user.max_user_namespaces=15000` as root)")
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/sys/kernel/unprivileged_userns_clone") as f:
            if f.read().strip() == "0":
                raise HostUnsupported("unprivileged user namespaces are disabled "
                                      "(fix: `sysctl -w kernel.unprivileged_userns_clone=1` as root)")
    except OSError:
        pass
    if storage == "fuse":
        if not os.access("/dev/fuse", os.R_OK | os.W_OK):
            raise HostUnsupported("/dev/fuse is not accessible to you (fix: `chmod 0666 /dev/fuse` as root, "
                                  "the usual mode, or use --storage=overlay)")
        # no fusermount3: the container mounts the FUSE rootfs inside its own user namespace


# ----- work inside a user namespace with the containers' map ------------------------------------------------
# A rootless store holds files owned by the user's subordinate ids (an image's www-data, nobody, ...). Only a
# process inside a user namespace with the full map may chown to those ids, or remove and read what they
# own; podman does the same (`podman unshare`). The helpers below fork such a process on demand.

CLONE_NEWUSER = 0x10000000


def full_id_maps() -> tuple[list[dict], list[dict]] | None:
    """(uidMappings, gidMappings) when this unprivileged user gets the full map; None for root or a
    single-id map (nothing but the user's own id could be stored then)."""
    if os.geteuid() == 0:
        return None
    uid_maps, gid_maps, note = id_mappings()
    return None if note else (uid_maps, gid_maps)


def _unshare_user_fn():
    """unshare(CLONE_NEWUSER) as a callable, resolved before fork (no dlopen in a child of a threaded parent)."""
    import ctypes

    unshare = ctypes.CDLL(None, use_errno=True).unshare

    def call() -> None:
        if unshare(CLONE_NEWUSER) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWUSER): {os.strerror(err)}")
    return call


def fork_into_userns(maps: tuple[list[dict], list[dict]]) -> int:
    """os.fork(), with the child in a new user namespace mapped by `maps` and root there (all capabilities
    over files owned by mapped ids). Returns 0 in the child, the child's pid in the parent. The child must
    leave with os._exit; a failure to set it up is raised in the parent (the child is reaped)."""
    from corert.engine.idmap import write_id_maps

    unshare_user = _unshare_user_fn()
    up_r, up_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(up_r)
        os.close(go_w)
        try:
            unshare_user()
            os.write(up_w, b"u")
            os.close(up_w)
            if os.read(go_r, 1) != b"g":
                os._exit(125)
            os.close(go_r)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            # The user's supplementary groups are kept: unmapped here (they show as the overflow gid), they
            # still grant what they grant the user outside, e.g. reading a build context file of one.
        except BaseException as e:  # noqa: BLE001 - the child never returns into the caller on failure
            try:
                os.write(up_w, b"e" + str(e).encode(errors="replace")[:400])
            finally:
                os._exit(125)
        return 0
    os.close(up_w)
    os.close(go_r)
    try:
        msg = os.read(up_r, 512)
        if msg != b"u":
            raise HostUnsupported(f"rootless: cannot enter a user namespace: {msg[1:].decode() or 'child died'}")
        write_id_maps(pid, *maps)
        os.write(go_w, b"g")
    except BaseException:
        _kill_reap(pid)
        raise
    finally:
        os.close(up_r)
        os.close(go_w)
    return pid


def _kill_reap(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def run_in_userns(maps: tuple[list[dict], list[dict]], fn, *args, feed=None, **kwargs):
    """fn(*args, **kwargs) in a forked child inside a user namespace mapped by `maps`; its return value (or
    the exception it raised) comes back pickled. With `feed` (a binary file object), the parent copies it
    to a pipe until EOF (or until the child stops reading) and fn gets the pipe's read end as its first
    argument: the caller keeps reading its own stream (hashing it, for instance)."""
    import pickle

    res_r, res_w = os.pipe()
    feed_r = feed_w = -1
    if feed is not None:
        feed_r, feed_w = os.pipe()
    try:
        pid = fork_into_userns(maps)
    except BaseException:
        for fd in (res_r, res_w, feed_r, feed_w):
            if fd >= 0:
                os.close(fd)
        raise
    if pid == 0:
        code = 0
        try:
            os.close(res_r)
            if feed_w >= 0:
                os.close(feed_w)
            try:
                if feed is not None:
                    with os.fdopen(feed_r, "rb", buffering=1 << 20) as src:
                        value = fn(src, *args, **kwargs)
                else:
                    value = fn(*args, **kwargs)
                out = (True, value)
            except BaseException as e:  # noqa: BLE001 - carried to the parent
                code, out = 1, (False, e)
            try:
                data = pickle.dumps(out)
                pickle.loads(data)   # e.g. an exception whose __init__ takes other arguments than its args
            except Exception as e:  # noqa: BLE001 - an unpicklable value or exception: its text will do
                text = str(out[1]) if not out[0] else f"{type(e).__name__}: {e}"
                code, data = 1, pickle.dumps((False, ResourceError(text)))
            write_all(res_w, data)
        finally:
            os._exit(code)
    os.close(res_w)
    try:
        if feed is not None:
            os.close(feed_r)
            feed_r = -1
            try:
                copy_to_fd(feed, feed_w)
            except BrokenPipeError:
                pass   # the child stopped reading (done, or failed: its result says which)
            finally:
                os.close(feed_w)
                feed_w = -1
        chunks = []
        while True:
            chunk = os.read(res_r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    except BaseException:
        _kill_reap(pid)
        raise
    finally:
        os.close(res_r)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        raise ResourceError(f"rootless: the user-namespace helper died (wait status {status})")
    ok, value = pickle.loads(b"".join(chunks))
    if not ok:
        raise value
    return value


def remove_tree(path: str | os.PathLike[str], *, check_mounts: bool = True) -> None:
    """corert.fsutil.remove_tree, retried inside the user namespace when the tree holds files of the user's
    subordinate ids (unpacked image layers, a container's copied-up files) that the user itself cannot
    remove. Root and single-id users get exactly fsutil's behaviour."""
    from corert import fsutil

    try:
        fsutil.remove_tree(path, check_mounts=check_mounts)
    except PermissionError:
        maps = full_id_maps()
        if maps is None:
            raise
        run_in_userns(maps, fsutil.remove_tree, os.fspath(path), check_mounts=check_mounts)


def as_userns_root(fn, *args, **kwargs):
    """fn(*args, **kwargs), inside the user namespace when this user has the full map: reading a tree that
    holds files of subordinate ids (a 0700 dir of www-data) needs it, and there the ids are the container's.
    Directly for root and single-id users."""
    maps = full_id_maps()
    if maps is None:
        return fn(*args, **kwargs)
    return run_in_userns(maps, fn, *args, **kwargs)
