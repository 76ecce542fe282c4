"""`corert build` through the installed CLI: a multi-step image from busybox run with `corert run`, the
layer cache (unchanged -> all cached; a changed line or COPYed file -> only that step and later ones),
.containerignore, and failures that leave no image, no cache entry, no container, mount or cgroup.

Each test has its own state root and image store (support.Front, through the `front` fixture).
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from support import Front

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="integration tests run as root")

CONTAINERFILE = """\
# the test image
ARG BASE=busybox
FROM $BASE
ARG GREETING=hello
ENV APP=/srv/app \\
    MODE="fast mode"
WORKDIR $APP
COPY app/ ./
COPY --chown=1234:99 --chmod=0600 owned.txt /etc/owned.txt
ADD bundle.tar.gz /opt/
RUN echo "$GREETING from $MODE" > greeting && \\
    echo "appuser:x:1234:1234::/srv/app:/bin/sh" >> /etc/passwd
USER appuser
EXPOSE 8080 53/udp
LABEL org.example.name="test image" tier=2
ENTRYPOINT ["/bin/sh", "-c", "echo \\"[$0 $*]\\"; cat greeting", "entry"]
CMD ["one", "two"]
"""
N_STEPS = 14


def make_context(root: Path) -> Path:
    (root / "app" / "sub").mkdir(parents=True)
    (root / "app" / "main.txt").write_text("main v1\n")
    (root / "app" / "sub" / "data.txt").write_text("data\n")
    (root / "app" / "notes.tmp").write_text("scratch notes\n")
    (root / "app" / "secret.key").write_text("do not ship\n")
    (root / "owned.txt").write_text("mine\n")
    (root / ".containerignore").write_text("**/*.tmp\napp/secret.key\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (("pkg/bin/tool", b"#!/bin/sh\necho tool\n"), ("pkg/README", b"readme\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tf.addfile(info, io.BytesIO(data))
    (root / "bundle.tar.gz").write_bytes(buf.getvalue())
    (root / "Containerfile").write_text(CONTAINERFILE)
    return root


def steps(output: str) -> list[tuple[str, str]]:
    """(instruction, outcome) per step: outcome "cached", "built" or "same" (FROM/ARG: no new image)."""
    lines = output.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.startswith("STEP "):
            instruction = line.split(": ", 1)[1]
            result = next(x for x in lines[i + 1:] if x.startswith("-->"))
            kind = instruction.split()[0]
            out.append((instruction, "cached" if result.startswith("--> Using cache")
                        else "same" if kind in ("FROM", "ARG") else "built"))
    return out


def build(front: Front, ctx: Path, *extra: str):
    r = front("build", "-t", "built:1", *extra, str(ctx), timeout=120)
    assert r.returncode == 0, f"build failed: {r.stdout}\n{r.stderr}"
    return r.stdout.splitlines()[-1], steps(r.stdout), r.stdout


def cache_entries(front: Front) -> set[str]:
    d = front.data / "build-cache"
    return set(os.listdir(d)) if d.exists() else set()


def test_build_run_and_layer_cache(front, tmp_path):
    ctx = make_context(tmp_path / "ctx")
    image_id, first, out = build(front, ctx)
    assert len(first) == N_STEPS and out.count("STEP ") == N_STEPS
    assert [o for _, o in first].count("built") == N_STEPS - 3 and "cached" not in [o for _, o in first]
    assert "Successfully tagged built:1:latest" not in out and "Successfully tagged built:1" in out
    assert len(image_id) == 64 and json.loads(front.ok("image", "inspect", "built:1"))["id"] == image_id

    # the image, as `corert run` sees it: ENTRYPOINT + CMD, ENV, WORKDIR, USER, files, owners, modes
    assert front.ok("run", "--rm", "built:1") == "[entry one two]\nhello from fast mode\n"
    probe = ("id -u; pwd; echo \"$MODE|$APP\"; cat main.txt sub/data.txt; ls -a; "
             "stat -c '%u:%g %a' /etc/owned.txt; /opt/pkg/bin/tool; cat /opt/pkg/README")
    out = front.ok("run", "--rm", "--entrypoint", "/bin/sh", "-u", "0", "built:1", "-c", probe)
    assert out.splitlines() == [
        "0", "/srv/app", "fast mode|/srv/app", "main v1", "data",
        ".", "..", "greeting", "main.txt", "sub",          # notes.tmp and secret.key are ignored
        "1234:99 600", "tool", "readme"]
    assert front.ok("run", "--rm", "--entrypoint", "id", "built:1", "-u") == "1234\n"
    config = json.loads(front.ok("image", "inspect", "built:1"))["config"]
    assert config["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert config["Labels"] == {"org.example.name": "test image", "tier": "2"}
    assert config["User"] == "appuser" and config["WorkingDir"] == "/srv/app"
    assert "GREETING" not in json.dumps(config)   # an ARG is not persisted

    # unchanged -> every step from the cache, the same image
    again, second, _ = build(front, ctx)
    assert again == image_id
    assert [o for _, o in second] == ["same", "same", "same"] + ["cached"] * (N_STEPS - 3)

    # an ignored file changes: still all cached (it is in neither the key nor the layer)
    (ctx / "app" / "notes.tmp").write_text("other notes\n")
    assert build(front, ctx)[0] == image_id

    # change line 15 (LABEL): steps before it cached, it and later ones rebuilt
    (ctx / "Containerfile").write_text(CONTAINERFILE.replace("tier=2", "tier=3"))
    _, changed, _ = build(front, ctx)
    label_at = next(i for i, (ins, _) in enumerate(changed) if ins.startswith("LABEL"))
    assert {o for _, o in changed[3:label_at]} == {"cached"}
    assert {o for _, o in changed[label_at:]} == {"built"}

    # change a COPYed file: that COPY and everything after it rebuild
    (ctx / "app" / "main.txt").write_text("main v2\n")
    new_id, copied, _ = build(front, ctx)
    copy_at = next(i for i, (ins, _) in enumerate(copied) if ins.startswith("COPY app/"))
    assert {o for _, o in copied[3:copy_at]} == {"cached"}
    assert {o for _, o in copied[copy_at:]} == {"built"}
    assert front.ok("run", "--rm", "--entrypoint", "cat", "built:1", "main.txt") == "main v2\n"

    # --no-cache: everything again, a new image
    fresh, nocache, _ = build(front, ctx, "--no-cache")
    assert fresh != new_id and "cached" not in [o for _, o in nocache]
    front.assert_clean()


def test_build_arg_and_run_layer_has_only_the_runs_changes(front, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM busybox\nARG WHO=nobody\nRUN echo \"hi $WHO\" > /hello\n"
                                       "CMD cat /hello\n")
    _, first, _ = build(front, ctx, "--build-arg", "WHO=world")
    assert front.ok("run", "--rm", "built:1") == "hi world\n"
    # another build-arg value is another RUN: a cache miss, docker's rule
    _, other, _ = build(front, ctx, "--build-arg", "WHO=moon")
    assert [o for _, o in other][2:] == ["built", "built"]
    info = json.loads(front.ok("image", "inspect", "built:1"))
    run_layer = Path(info["layers"][-1]["path"])
    # the RUN's layer holds its file only: no mount-point stubs (/sys/fs/cgroup, /proc, resolv.conf...)
    assert sorted(os.listdir(run_layer)) == ["hello"]
    front.assert_clean()


FAILURES = [
    ("FROM busybox\nENV A=1\nFROBNICATE x\n", "Containerfile:3: unknown instruction: FROBNICATE"),
    ("FROM busybox\nENV A=1\nENV B=\"open\n", "Containerfile:3: ENV: unterminated double quote"),
    ("FROM busybox\nENV A=1\nRUN echo partial > /partial; exit 7\n", "Containerfile:3: RUN exited with code 7"),
    ("FROM busybox\nENV A=1\nCOPY missing.txt /\n", "Containerfile:3: COPY: 'missing.txt' not found"),
    ("FROM busybox\nENV A=1\nCOPY ../outside.txt /\n", "Containerfile:3: COPY: source '../outside.txt' is outside"),
    ("FROM busybox\nENV A=1\nCOPY escape /\n", "Containerfile:3: COPY: source 'escape' is outside"),
    ("FROM busybox\nENV A=1\nADD secret.key /\n", "Containerfile:3: ADD: 'secret.key' is excluded"),
]


@pytest.mark.parametrize("text, message", FAILURES, ids=["syntax", "quote", "run", "missing", "dotdot",
                                                          "symlink", "ignored"])
def test_failures_are_one_line_and_leave_nothing(front, tmp_path, text, message):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (tmp_path / "outside.txt").write_text("outside\n")
    (ctx / "escape").symlink_to(tmp_path / "outside.txt")
    (ctx / "secret.key").write_text("k\n")
    (ctx / ".dockerignore").write_text("*.key\n")   # the fallback ignore file
    (ctx / "Containerfile").write_text("FROM busybox\nENV A=1\n")
    build(front, ctx)   # the good prefix, cached
    before_cache = cache_entries(front)
    before_images = front.ok("image", "ls")
    (ctx / "Containerfile").write_text(text)
    r = front("build", "-t", "bad:1", str(ctx), timeout=120)
    assert r.returncode == 125
    errors = [line for line in r.stderr.splitlines() if line.startswith("corert:")]
    assert errors == [errors[0]] and errors[0].startswith(f"corert: {message}"), r.stderr
    assert cache_entries(front) == before_cache           # no entry for the failed step
    assert front.ok("image", "ls") == before_images   # no partial image, no tag
    assert front("image", "inspect", "bad:1").returncode != 0
    front.assert_clean()                                   # no container, data dir, staging dir or mount


def test_bad_tag_and_missing_containerfile(front, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    r = front("build", "-t", "x", str(ctx))
    assert r.returncode == 125 and "no Containerfile or Dockerfile" in r.stderr
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN touch /x\n")
    r = front("build", "-t", "sha256:bad", str(ctx))
    assert r.returncode == 125 and "invalid image name" in r.stderr and "STEP 2" not in r.stdout
    r = front("build", "-f", str(ctx / "Dockerfile"), "-t", "ok:1", str(ctx))
    assert r.returncode == 0, r.stderr
    front.assert_clean()


def test_copy_chown_group_from_a_later_layer(front, tmp_path):
    """--chown's user and group are each looked up in the layer that holds their file: the RUN's layer has
    only /etc/group (the base image's /etc/passwd is below it)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "owned.txt").write_text("mine\n")
    (ctx / "Containerfile").write_text("FROM busybox\nRUN echo app:x:4321: >> /etc/group\n"
                                       "COPY --chown=nobody:app owned.txt /owned.txt\n")
    build(front, ctx)
    out = front.ok("run", "--rm", "built:1", "stat", "-c", "%u:%g", "/owned.txt")
    assert out == "65534:4321\n"
    front.assert_clean()
