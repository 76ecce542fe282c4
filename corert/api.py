"""The embedding API: corert as a trio-native runtime backend for another Python program.

    import corert, trio

    async def main():
        async with corert.Runtime(root="/run/myapp", storage="overlay") as rt:
            img = await rt.images.get("busybox")
            async with rt.container(img, ["sh", "-c", "echo hi"], memory="64M", net="none") as c:
                await c.start()
                print(await c.stdout.receive_some())     # trio streams for stdio
                print(await c.wait())                    # ExitStatus(exit_code=0, signal=None, oom_killed=False)
            print(await rt.run("busybox", ["uname", "-n"]))   # create + start + wait + collect output

    trio.run(main)

The lifecycle is the CLI's engine (create_managed / create_from_config, start, kill, pause, update,
spawn_exec, delete): the same state root shows the same containers to `corert list` and `corert ps`.
Structured: leaving a container's `async with` (normally, by exception or cancellation) kills and removes
it. Exits are awaited through each process's pidfd, so corert never reaps (or leaves as zombies) the
embedding program's other children. `corert.run_sync(...)` is the same for code that is not async.
See examples/embed.py.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from corert._api.container import Container, ExecProcess, RunResult
from corert._api.events import Event, EventStream
from corert._api.process import DEVNULL, PIPE, ExitStatus
from corert._api.runtime import ContainerInfo, Images, Runtime
from corert.images.store import Image

__all__ = ["DEVNULL", "PIPE", "Container", "ContainerInfo", "Event", "EventStream", "ExecProcess", "ExitStatus",
           "Image", "Images", "RunResult", "Runtime", "run_sync"]


def run_sync(image: Image | str, command: Sequence[str] | None = None, *, root: str | os.PathLike | None = None,
             data_root: str | os.PathLike | None = None, storage: str | None = None, cgroups: str = "auto",
             input: bytes | None = None, **options: Any) -> RunResult:
    """Run one container to completion from synchronous code (a private trio loop; options as Runtime.container)."""
    import trio

    async def main() -> RunResult:
        async with Runtime(root, data_root=data_root, storage=storage, cgroups=cgroups) as rt:
            return await rt.run(image, command, input=input, **options)
    return trio.run(main)
