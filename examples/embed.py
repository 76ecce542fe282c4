"""Embedding corert in a trio program: run as root with the project's venv python.

    sudo /work/main/.venv/bin/python examples/embed.py

It uses a private state root and data root under a temporary directory, so it leaves nothing behind;
while it runs, `corert --root <root> list` shows its containers.
"""
from __future__ import annotations

import tempfile

import trio

import corert


async def main(tmp: str) -> None:
    async with corert.Runtime(root=f"{tmp}/state", data_root=f"{tmp}/data", storage="overlay") as rt:
        img = await rt.images.get("busybox")          # built from the host's busybox on first use

        async def show_events() -> None:
            async for event in rt.events():
                print(f"  event: {event.type:<7} {event.id[:12]} {event.data or ''}")

        async with trio.open_nursery() as background:
            background.start_soon(show_events)

            # Streams: a container whose stdout we read while it runs.
            async with rt.container(img, ["sh", "-c", "echo hello from $(hostname); exit 3"], memory="64M",
                                    net="none") as c:
                await c.start()
                print("stdout:", (await c.stdout.receive_some()).decode().strip())
                print("status:", await c.wait())

            # Run to completion, many at once: each is created, started, waited for and removed.
            async def one(i: int) -> None:
                r = await rt.run(img, ["sh", "-c", f"echo $(({i}*{i}))"])
                print(f"run {i}: exit {r.exit_code}, stdout {r.stdout.decode().strip()}")
            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(one, i)

            # exec and control verbs on a long-running container; cancellation removes it.
            with trio.move_on_after(10):
                async with rt.container(img, ["sleep", "1000"]) as c:
                    await c.start()
                    r = await c.exec(["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"])
                    print("exec:", r.stdout.decode().strip())
                    await c.pause()
                    print("paused:", await c.status())
                    await c.resume()
                    stats = await c.stats()
                    print("memory usage:", stats["memory"]["usage"]["usage"], "bytes")
                    print("containers now:", [(i.name, i.status) for i in await rt.list()])
                    await c.stop(grace=1)
            print("left behind:", await rt.list())
            background.cancel_scope.cancel()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="corert-embed-") as tmp:
        trio.run(main, tmp)
        # For code that is not async (outside any trio.run):
        r = corert.run_sync("busybox", ["echo", "from run_sync"], root=f"{tmp}/state", data_root=f"{tmp}/data")
        print("run_sync:", r.exit_code, r.stdout.decode().strip())
