"""The embedding API for real (as root): trio streams, many containers at once, cancellation in every state,
SIGTERM-ignoring processes, exceptions, other children of the embedding program, a killed embedding
process, and visibility to the CLI. The autouse leak check proves each test left no mount, cgroup or process.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

import corert
from corert.api import ExitStatus, Runtime
from support import children, exited, read_config, write_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="integration tests run as root")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One image store for the module: the busybox image is built once."""
    return tmp_path_factory.mktemp("api-data")


@pytest.fixture
def rt_args(state_root, data_root) -> dict:
    return {"root": state_root, "data_root": data_root}


def assert_empty(state_root: Path, data_root: Path) -> None:
    """No container record and no container data dir is left."""
    records = [p.name for p in state_root.iterdir() if p.is_dir() and not p.name.startswith(("@", "."))]
    assert records == []
    containers = data_root / "containers"
    assert not containers.exists() or list(containers.iterdir()) == []


async def read_line(stream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            break
        data += chunk
    return data


def test_container_stdout_streams_and_exit_code(rt_args, state_root, data_root):
    async def main():
        async with Runtime(**rt_args) as rt:
            img = await rt.images.get("busybox")
            async with rt.container(img, ["sh", "-c", "echo hi; echo oops >&2; exit 3"], memory="64M") as c:
                assert await c.status() == "created"
                await c.start()
                out = await c.stdout.receive_some()
                err = await c.stderr.receive_some()
                status = await c.wait()
            return out, err, status, c.pid

    out, err, status, pid = trio.run(main)
    assert (out, err) == (b"hi\n", b"oops\n")
    assert status == ExitStatus(exit_code=3, signal=None, oom_killed=False)
    assert exited(pid)
    assert_empty(state_root, data_root)


def test_run_collects_output_and_feeds_stdin(rt_args, state_root, data_root):
    async def main():
        async with Runtime(**rt_args) as rt:
            return await rt.run("busybox", ["sh", "-c", "tr a-z A-Z; echo done >&2"], input=b"hello\n")

    r = trio.run(main)
    assert (r.exit_code, r.stdout, r.stderr, r.signal, r.oom_killed) == (0, b"HELLO\n", b"done\n", None, False)
    sync = corert.run_sync("busybox", ["sh", "-c", "echo $((6*7))"], **rt_args)
    assert (sync.exit_code, sync.stdout) == (0, b"42\n")
    assert_empty(state_root, data_root)


def test_twenty_concurrent_containers(rt_args, state_root, data_root):
    async def main():
        results = {}
        async with Runtime(**rt_args) as rt:
            async def one(i: int) -> None:
                results[i] = await rt.run("busybox", ["sh", "-c", f"echo container-{i}; exit {i % 3}"])
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(one, i)
        return results

    results = trio.run(main)
    assert sorted(results) == list(range(20))
    for i, r in results.items():
        assert (r.exit_code, r.stdout) == (i % 3, f"container-{i}\n".encode())
    assert len({r.id for r in results.values()}) == 20
    assert_empty(state_root, data_root)


@pytest.mark.parametrize("when", ["before-create", "during-create", "before-start", "running", "during-wait"])
def test_cancellation_in_every_state_leaves_nothing(rt_args, state_root, data_root, when):
    seen: dict = {}

    async def main():
        async with Runtime(**rt_args) as rt:
            await rt.images.get("busybox")
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    if when == "before-create":
                        scope.cancel()
                    elif when == "during-create":
                        async def cancel_once_the_state_dir_exists():
                            while not any(p for p in state_root.iterdir() if not p.name.startswith("@")):
                                await trio.sleep(0.001)
                            scope.cancel()
                        nursery.start_soon(cancel_once_the_state_dir_exists)
                    async with rt.container("busybox", ["sh", "-c", "echo ready; exec sleep 1000"]) as c:
                        seen["pid"] = c.pid
                        await trio.sleep(0)       # where a cancelled create is noticed
                        if when == "before-start":
                            scope.cancel()
                            await trio.sleep(0)
                        await c.start()
                        assert await read_line(c.stdout) == b"ready\n"
                        if when == "running":
                            scope.cancel()
                            await trio.sleep_forever()
                        async def cancel():
                            scope.cancel()
                        nursery.start_soon(cancel)
                        await c.wait()
                        seen["not cancelled"] = True
            assert scope.cancelled_caught
            return await rt.list()

    left = trio.run(main)
    assert left == []
    assert "not cancelled" not in seen
    if "pid" in seen:
        assert exited(seen["pid"])
    elif when == "during-create":
        pytest.fail("the container was never handed to the body")
    assert_empty(state_root, data_root)


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(rt_args, state_root, data_root):
    async def main():
        async with Runtime(**rt_args) as rt:
            async with rt.container("busybox", ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"]) as c:
                await c.start()
                assert await read_line(c.stdout) == b"ready\n"
                await c.kill(signal.SIGTERM)                       # ignored
                assert await c.status() == "running"
                return await c.stop(grace=0.5)

    status = trio.run(main)
    assert (status.exit_code, status.signal) == (128 + signal.SIGKILL, signal.SIGKILL)
    assert_empty(state_root, data_root)


# Each signal that can arrive has its own exit code: the code says which one `stop` sent.
TRAPS = 'trap "exit 10" USR1; trap "exit 12" USR2; trap "exit 15" TERM; echo ready; while :; do sleep 0.1; done'


@pytest.mark.parametrize("options, sig, code", [
    ({}, None, 15),                                # no stop signal anywhere: SIGTERM
    ({"stop_signal": "SIGUSR1"}, None, 10),        # the container's stop signal, as `corert stop`
    ({"stop_signal": "usr1"}, signal.SIGUSR2, 12),  # an explicit signal wins
])
def test_stop_sends_the_containers_stop_signal(rt_args, state_root, data_root, options, sig, code):
    async def main():
        async with Runtime(**rt_args) as rt:
            async with rt.container("busybox", ["sh", "-c", TRAPS], **options) as c:
                await c.start()
                assert await read_line(c.stdout) == b"ready\n"
                return await c.stop(grace=30, sig=sig)

    status = trio.run(main)
    assert (status.exit_code, status.signal) == (code, None)
    assert_empty(state_root, data_root)


def test_stop_thaws_a_paused_container(rt_args, state_root, data_root):
    """As `corert stop`: a paused container gets the stop signal and is thawed to act on it, instead of
    sitting out the grace period until SIGKILL."""
    async def main():
        async with Runtime(**rt_args) as rt:
            async with rt.container("busybox", ["sh", "-c", TRAPS]) as c:
                await c.start()
                assert await read_line(c.stdout) == b"ready\n"
                await c.pause()
                return await c.stop(grace=60)

    status = trio.run(main)
    assert (status.exit_code, status.signal) == (15, None)
    assert_empty(state_root, data_root)


def test_exception_inside_async_with_cleans_up(rt_args, state_root, data_root):
    pids = []

    async def main():
        async with Runtime(**rt_args) as rt:
            async with rt.container("busybox", ["sleep", "1000"]) as c:
                pids.append(c.pid)
                await c.start()
                raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):      # unwrapped: the Runtime's nursery adds no group
        trio.run(main)
    assert exited(pids[0])
    assert_empty(state_root, data_root)


def test_other_children_of_the_embedding_program_are_not_reaped(rt_args, state_root, data_root):
    async def main():
        child = os.fork()
        if child == 0:
            os._exit(7)
        async with Runtime(**rt_args) as rt:
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(rt.run, "busybox", ["true"])
        return child

    child = trio.run(main)
    # corert waited only through its own pidfds: the status of our child is still ours to collect...
    pid, status = os.waitpid(child, 0)
    assert (pid, os.WIFEXITED(status), os.WEXITSTATUS(status)) == (child, True, 7)
    # ...and it left no zombie of its own.
    assert children(zombies=True) == set()
    assert_empty(state_root, data_root)


def test_exec_pause_update_stats_and_events(rt_args, state_root, data_root):
    async def main():
        async with Runtime(**rt_args) as rt:
            events = rt.events()
            async with rt.container("busybox", ["sleep", "1000"], memory="64M") as c:
                await c.start()
                r = await c.exec(["sh", "-c", "echo $$ in $(hostname); cat; exit 5"], input=b"piped\n")
                assert r.exit_code == 5 and r.stdout.endswith(b"piped\n") and b" in " in r.stdout
                async with c.open_exec(["sh", "-c", "echo $$; exec sleep 1000"]) as p:
                    assert int(await read_line(p.stdout)) > 1    # a pid in the container's namespace
                    exec_pid = p.pid
                    assert not exited(exec_pid)
                assert exited(exec_pid)       # leaving the block killed the process itself
                await c.pause()
                assert await c.status() == "paused"
                await c.resume()
                await c.update(memory="32M")
                stats = await c.stats()
                assert stats["memory"]["usage"]["limit"] == 32 * 1024 * 1024
                assert stats["pids"]["current"] >= 1
                cid = c.id
            types = []
            with trio.move_on_after(5):
                async for e in events:
                    assert e.id == cid
                    types.append(e.type)
                    if e.type == "delete":
                        break
            return types

    types = trio.run(main)
    assert types == ["create", "start", "exec", "exec", "pause", "resume", "update", "exit", "delete"]
    assert_empty(state_root, data_root)


def test_oom_kill_is_reported(rt_args, state_root, data_root):
    async def main():
        async with Runtime(**rt_args) as rt:
            events = rt.events()
            r = await rt.run("busybox", ["sh", "-c", "head -c 256m /dev/zero | tail"], memory="16M")
            types = []
            with trio.move_on_after(5):
                async for e in events:
                    types.append(e.type)
                    if e.type == "delete":
                        break
            return r, types

    r, types = trio.run(main)
    assert r.oom_killed and r.exit_code != 0
    assert "oom" in types and types.index("oom") < types.index("exit")
    assert_empty(state_root, data_root)


def test_bundle_level_container(rt_args, state_root, data_root, bundle):
    config = read_config(bundle)
    config["process"]["args"] = ["sh", "-c", "echo from-bundle"]
    write_config(bundle, config)

    async def main():
        async with Runtime(**rt_args) as rt:
            async with rt.create_from_bundle("api-bundle", bundle) as c:
                assert (await c.state())["status"] == "created"
                await c.start()
                out = await read_line(c.stdout)
                return out, await c.wait()

    out, status = trio.run(main)
    assert (out, status.exit_code) == (b"from-bundle\n", 0)
    assert_empty(state_root, data_root)


def test_api_containers_are_visible_to_the_cli(rt_args, state_root, data_root, corert):
    async def main():
        async with Runtime(**rt_args) as rt:
            async with rt.container("busybox", ["sleep", "1000"], name="api-visible") as c:
                await c.start()
                listing = await trio.to_thread.run_sync(lambda: corert("list", "--format", "json", check=True))
                ps = await trio.to_thread.run_sync(lambda: corert("ps", check=True))
                infos = await rt.list()
                return c.id, c.pid, json.loads(listing.stdout), ps.stdout, infos

    cid, pid, listing, ps, infos = trio.run(main)
    assert [(e["id"], e["status"], e["pid"]) for e in listing] == [(cid, "running", pid)]
    assert "api-visible" in ps and cid[:12] in ps
    assert [(i.id, i.status, i.name, i.owner_pid) for i in infos] == [(cid, "running", "api-visible", os.getpid())]
    assert_empty(state_root, data_root)


EMBEDDER = textwrap.dedent("""
    import os, sys, trio
    from corert.api import Runtime

    async def main():
        async with Runtime(sys.argv[1], data_root=sys.argv[2]) as rt:
            managed = await rt.container("busybox", ["sleep", "1000"]).__aenter__()
            await managed.start()
            bundle = await rt.create_from_bundle("orphan-bundle", sys.argv[3]).__aenter__()
            await bundle.start()
            print(managed.id, managed.pid, bundle.pid, flush=True)
            os._exit(0)          # killed before any cleanup could run

    trio.run(main)
""")


def test_gc_and_delete_force_remove_what_a_killed_embedder_left(rt_args, state_root, data_root, bundle, corert):
    config = read_config(bundle)
    config["process"]["args"] = ["sleep", "1000"]
    write_config(bundle, config)
    out = subprocess.run([sys.executable, "-c", EMBEDDER, str(state_root), str(data_root), str(bundle)],
                         capture_output=True, text=True, timeout=120, cwd=bundle.parent)
    assert out.returncode == 0, out.stderr
    managed_id, managed_pid, bundle_pid = out.stdout.split()
    managed_pid, bundle_pid = int(managed_pid), int(bundle_pid)
    assert not exited(managed_pid) and not exited(bundle_pid)
    states = {e["id"]: e["status"] for e in json.loads(corert("list", "--format", "json", check=True).stdout)}
    assert states == {managed_id: "running", "orphan-bundle": "running"}

    corert("delete", "--force", "orphan-bundle", check=True)       # the CLI can clean up after it...

    async def main():
        async with Runtime(**rt_args) as rt:                           # ...and so can Runtime.gc()
            removed = await rt.gc()
            return removed, await rt.list()

    removed, left = trio.run(main)
    assert (removed, left) == ([managed_id], [])
    assert exited(managed_pid) and exited(bundle_pid)
    assert_empty(state_root, data_root)


def test_gc_leaves_containers_of_live_processes_alone(rt_args, state_root, data_root):
    async def main():
        async with Runtime(**rt_args) as rt:
            async with rt.container("busybox", ["sleep", "1000"]) as c:
                await c.start()
                return await rt.gc(), c.id

    removed, _cid = trio.run(main)
    assert removed == []
    assert_empty(state_root, data_root)
