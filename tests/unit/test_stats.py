"""The pure parts of `corert stats`, against fixed inputs (the integration tests use the real kernel)."""
from __future__ import annotations

import pytest


def test_psi_parse_sizes_and_docker_cpu_formula():
    """The pure parts, against fixed inputs: the kernel's PSI text, docker's size units, docker's CPU %."""
    from corert.drivers.cgroups import psi
    from corert.engine.stats import Reading, cpu_percent
    from corert.frontend.stats import binary_size, decimal_size

    text = "some avg10=12.50 avg60=3.25 avg300=0.75 total=987654\nfull avg10=0.00 avg60=0.10 avg300=0.02 total=42\n"
    assert psi.parse(text) == {"some": {"avg10": 12.5, "avg60": 3.25, "avg300": 0.75, "total": 987654},
                               "full": {"avg10": 0.0, "avg60": 0.1, "avg300": 0.02, "total": 42}}
    assert psi.parse("") == {}
    assert set(psi.host()) == {"cpu", "memory", "io"}          # this kernel has PSI

    assert (binary_size(0), binary_size(1023), binary_size(64 << 20), binary_size(1234567)) == \
        ("0B", "1023B", "64MiB", "1.177MiB")
    assert (decimal_size(0), decimal_size(1024), decimal_size(1_500_000)) == ("0B", "1.02kB", "1.5MB")

    # 1.5 s of container CPU while the host's 2 CPUs ran 4 s in total: 0.375 * 2 CPUs = 75 %.
    before, after = Reading(0, 10 * 10**9, 2, 0), Reading(15 * 10**8, 14 * 10**9, 2, 2 * 10**9)
    assert cpu_percent(after, before) == pytest.approx(75.0)
    # Host time unknown for one reading: by wall time (1.5 s over 2 s = 75 %); no progress: 0.
    assert cpu_percent(after, Reading(0, None, 2, 0)) == pytest.approx(75.0)
    assert cpu_percent(before, before) == 0.0


def test_pressure_dir_of_each_driver_and_old_v1_state():
    """Where a container's PSI is read: v2 its cgroup, v1 its hybrid-host cgroup2 dir (none elsewhere)."""
    from corert.drivers.cgroups import load_handle

    assert load_handle({"driver": "v2", "path": "/sys/fs/cgroup/x"}).pressure_dir() == "/sys/fs/cgroup/x"
    assert load_handle({"driver": "v1", "dirs": {"memory": "/m"}}).pressure_dir() is None
    assert load_handle({"driver": "none"}).pressure_dir() is None
    v1 = load_handle({"driver": "v1", "dirs": {"memory": "/m"}, "mounts": {"memory": "memory"}, "unified": "/u"})
    assert v1.pressure_dir() == "/u" and v1.container_mounts() == [("/m", "memory")]
    assert v1.state()["unified"] == "/u" and v1.state()["dirs"] == {"memory": "/m"}
    # State saved before the `unified` field kept the cgroup2 dir as a fake "unified" hierarchy.
    old = load_handle({"driver": "v1", "dirs": {"memory": "/m", "unified": "/u"},
                       "mounts": {"memory": "memory", "unified": "unified"}})
    assert old.pressure_dir() == "/u" and old.container_mounts() == [("/m", "memory")]
    assert old.state() == v1.state()
