"""OCI hooks: run each hook with the container's state JSON on stdin, bounded by its timeout.

A failing or timed-out hook raises HookError naming the phase and the path. Per the runtime spec,
failures of poststart and poststop hooks are only warnings: the caller catches and reports them.
"""
from __future__ import annotations

import os

from corert import jsonio
from corert.errors import HookError

HOOK_PHASES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def run_hooks(hooks: list[dict] | None, state: dict, phase: str) -> None:
    """Run `hooks` (the config's hooks[phase] list) in order; stop at the first failure."""
    if not hooks:
        return
    payload = jsonio.dumps(state).encode()
    for hook in hooks:
        run_hook(hook, payload, phase)


def run_hook(hook: dict, payload: bytes, phase: str) -> None:
    """One hook: execv(path, args) with env (inherited when absent, like runc), state on stdin."""
    import subprocess  # lazy: only bundles with hooks pay for it

    path = hook.get("path")
    if not isinstance(path, str) or not path:
        raise HookError(f"{phase} hook without a path")
    args = hook.get("args") or [path]
    env = hook.get("env")
    env_map = None if env is None else dict(_split_env(e) for e in env)
    timeout = hook.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
        raise HookError(f"{phase} hook {path}: timeout must be a positive integer, not {timeout!r}")
    try:
        proc = subprocess.Popen(args, executable=path, env=env_map, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                                start_new_session=True)
    except OSError as e:
        raise HookError(f"{phase} hook {path} failed: {e.strerror or e}") from None
    try:
        _out, err = proc.communicate(payload, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise HookError(f"{phase} hook {path} timed out after {timeout}s") from None
    except BaseException:
        _kill_group(proc)
        raise
    if proc.returncode != 0:
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit status {proc.returncode}")
        detail = _last_line(err)
        raise HookError(f"{phase} hook {path} failed: {how}" + (f": {detail}" if detail else ""))


def _split_env(entry: str) -> tuple[str, str]:
    key, _, value = entry.partition("=")
    return key, value


def _last_line(data: bytes) -> str:
    lines = [ln for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip()[:200] if lines else ""


def _kill_group(proc: "object") -> None:
    """Kill the hook and anything it forked (its own session), then reap it."""
    import _signal

    try:
        os.killpg(proc.pid, _signal.SIGKILL)  # type: ignore[attr-defined]
    except ProcessLookupError:
        pass
    proc.wait()  # type: ignore[attr-defined]
    for pipe in (proc.stdin, proc.stdout, proc.stderr):  # type: ignore[attr-defined]
        if pipe is not None:
            pipe.close()
