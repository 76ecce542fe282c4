"""Runtime events: a broadcast hub that `Runtime.events()` subscribes to, and the OOM watcher.

Lifecycle events (create, start, exec, pause, resume, update, exit, delete) are emitted by the API as it
drives the engine; "oom" comes from the kernel: on cgroup v1 an eventfd registered on memory.oom_control
wakes the watcher the moment the OOM killer acts. Elsewhere the OOM kill is reported with the exit.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import trio


@dataclass(frozen=True)
class Event:
    type: str                  # create | start | exec | pause | resume | update | oom | exit | delete
    id: str                    # container id
    data: dict = field(default_factory=dict)


class EventHub:
    def __init__(self) -> None:
        self._subscribers: list[trio.MemorySendChannel[Event]] = []

    def emit(self, event: Event) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(send)

    def subscribe(self) -> EventStream:
        # Unbounded: emit() runs in engine paths that must not block on a slow reader.
        send, receive = trio.open_memory_channel[Event](math.inf)
        self._subscribers.append(send)
        return EventStream(receive)

    def close(self) -> None:
        for send in self._subscribers:
            send.close()
        self._subscribers = []


class EventStream:
    """`async for event in rt.events(): ...`; ends when the Runtime closes. Use `async with` to stop early."""

    def __init__(self, receive: trio.MemoryReceiveChannel[Event]) -> None:
        self._receive = receive

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._receive.close()


def _oom_kills(memory_dir: str) -> int | None:
    try:
        with open(os.path.join(memory_dir, "memory.oom_control")) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except OSError:
        return None
    return 0


def open_oom_eventfd(cgroup_state: dict | None) -> tuple[int, str] | None:
    """cgroup v1: an eventfd the kernel signals on OOM in the container's memory cgroup (and on rmdir)."""
    if not cgroup_state or cgroup_state.get("driver") != "v1":
        return None
    memory_dir = next((d for key, d in (cgroup_state.get("dirs") or {}).items() if "memory" in key.split(",")),
                      None)
    if memory_dir is None:
        return None
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        control = os.open(os.path.join(memory_dir, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            with open(os.path.join(memory_dir, "cgroup.event_control"), "w") as f:
                f.write(f"{efd} {control}")
        finally:
            os.close(control)   # the kernel holds its own reference once registered
    except OSError:
        os.close(efd)
        return None
    return efd, memory_dir


async def watch_oom(efd: int, memory_dir: str, on_oom: Callable[[], None]) -> None:
    """Call on_oom() each time the OOM killer strikes; returns when the cgroup goes away. Owns efd."""
    try:
        seen = _oom_kills(memory_dir) or 0
        while True:
            await trio.lowlevel.wait_readable(efd)
            try:
                os.eventfd_read(efd)
            except BlockingIOError:
                continue
            kills = _oom_kills(memory_dir)
            if kills is None:
                return                      # the cgroup was removed (which also signals the eventfd)
            if kills > seen:
                seen = kills
                on_oom()
    finally:
        trio.lowlevel.notify_closing(efd)
        os.close(efd)
