"""benchmarks/report.py: a pytest-benchmark JSON -> ratios, markdown, PNG, README section (no timing here)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("bench_report", BENCH / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def _bench(group: str, runtime: str, median_ms: float, label: str | None = None, **extra) -> dict:
    s = median_ms / 1e3
    return {"group": group, "name": f"test_{group}[{runtime}]",
            "stats": {"median": s, "q1": s * 0.9, "q3": s * 1.1, "rounds": 30, "min": s * 0.8},
            "extra_info": {"label": label or f"{runtime} {group}", "runtime": runtime, "loadavg": 1.5, **extra}}


def _write(tmp_path: Path, corert_run_ms: float = 80.0) -> Path:
    layer = {"content_bytes": 50_000_000, "tar_bytes": 55_000_000, "files": 5000}
    data = {"machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2}, "release": "6.0", "python_version": "3.11"},
            "datetime": "2024-01-01T00:00:00",
            "benchmarks": [
                _bench("run", "corert", corert_run_ms), _bench("run", "runc", 40.0), _bench("run", "crun", 30.0),
                _bench("run", "wrapper", 5.0), _bench("run", "floor", 2.0),
                _bench("create-start-delete", "corert", 150.0), _bench("create-start-delete", "runc", 50.0),
                _bench("create-start-delete", "crun", 45.0), _bench("create-start-delete", "wrapper", 16.0),
                _bench("front-door", "corert", 120.0, "corert run --rm busybox (overlay)"),
                _bench("image-import", "corert", 1000.0, "corert import (tmpfs)", fs="tmpfs", **layer),
                _bench("image-import", "tar", 250.0, "tar -x (tmpfs)", fs="tmpfs", **layer)]}
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(data))
    return path


def test_ratios_subtract_the_crun_wrapper(report, tmp_path: Path) -> None:
    rows, _meta = report.load(_write(tmp_path))
    s = report.summary(rows)
    assert s["run_ms"]["crun_net"] == pytest.approx(25.0)
    assert s["ratios"]["corert/runc"] == pytest.approx(2.0)
    assert s["ratios"]["corert/crun_net"] == pytest.approx(80 / 25)
    assert s["ratios"]["corert/floor"] == pytest.approx(40.0)
    assert s["csd_ms"]["crun_net"] == pytest.approx(45.0 - 16.0)   # the group's own wrapper row (3 calls)
    assert s["ratios"]["csd corert/runc"] == pytest.approx(3.0)


def _interleaved(**medians_ms: float) -> dict:
    return {"group": "run-interleaved", "name": "test_run_interleaved", "stats": {"median": 1, "q1": 1, "q3": 1,
            "rounds": 30}, "extra_info": {"label": "interleaved", "runtime": "mix", "interleaved": {
                name: {"median": ms, "q1": ms * 0.9, "q3": ms * 1.1, "rounds": 30} for name, ms in medians_ms.items()}}}


def test_ratios_never_mix_groups(report, tmp_path: Path) -> None:
    """With an interleaved run, every run ratio comes from its medians alone; csd needs its own wrapper."""
    path = _write(tmp_path)
    data = json.loads(path.read_text())
    data["benchmarks"] = [b for b in data["benchmarks"]
                          if (b["group"], b["extra_info"]["runtime"]) != ("create-start-delete", "wrapper")]
    data["benchmarks"].append(_interleaved(corert=30.0, runc=40.0, crun=24.0, wrapper=4.0, floor=3.0))
    path.write_text(json.dumps(data))
    s = report.summary(report.load(path)[0])
    assert s["ratio_group"] == "run-interleaved"
    assert s["ratios"]["corert/runc"] == pytest.approx(0.75)
    assert s["ratios"]["corert/crun_net"] == pytest.approx(30 / 20)
    assert s["ratios"]["corert/floor"] == pytest.approx(10.0)
    assert s["csd_ms"]["crun_net"] is None and s["ratios"]["csd corert/crun_net"] is None
    data["benchmarks"][-1] = _interleaved(corert=30.0, runc=40.0, crun=24.0)   # an older run: no floor, no wrapper
    path.write_text(json.dumps(data))
    s = report.summary(report.load(path)[0])
    assert s["ratios"]["corert/floor"] is None and s["run_ms"]["crun_net"] is None   # not the `run` group's


@pytest.mark.parametrize("corert_ms,verdict", [(80.0, "missed (2.50x the target)"), (30.0, "met")])
def test_markdown_states_the_verdict(report, tmp_path: Path, corert_ms: float, verdict: str) -> None:
    rows, meta = report.load(_write(tmp_path, corert_ms))
    text = report.markdown(rows, meta)
    line = next(ln for ln in text.splitlines() if ln.startswith("| corert run / runc run"))
    assert verdict in line
    assert "| tar -x (tmpfs) | 0.250 | 200.0 | 20000 | 1.00 |" in text       # MB/s and files/s from extra_info
    assert "| corert import (tmpfs) | 1.000 | 50.0 | 5000 | 4.00 |" in text
    assert "Test CPU, 2 vCPU, kernel 6.0" in text


def test_main_writes_png_and_readme_section(report, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n\n{report.BEGIN}\nold numbers\n{report.END}\n\n## analysis stays\n")
    png = tmp_path / "out" / "chart.png"
    phases = tmp_path / "phases.json"
    phases.write_text(json.dumps({"rounds": 3, "python_c_pass_ms": 10.0, "modules_imported": 90,
                                  "medians_ms": {"imports": 30.0, "python exit": 10.0, "total": 80.0},
                                  "verbs_ms": {"corert": {"start": 30.0}, "runc": {"start": 6.0}}}))
    code = report.main([str(_write(tmp_path)), "--png", str(png), "--readme", str(readme), "--phases", str(phases)])
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = readme.read_text()
    assert text.startswith("# intro\n") and text.endswith("## analysis stays\n")
    assert "old numbers" not in text and "| corert run / runc run | 2.00 |" in text
    assert "| imports | 30.00 | 38% |" in text
    assert "| `start` | 30.00 | 6.00 | 5.0 |" in text
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1


def test_missing_markers_or_input_fail_with_one_line(report, tmp_path: Path, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    args = ["--png", str(tmp_path / "c.png"), "--readme", str(readme)]
    assert report.main([str(_write(tmp_path)), *args]) == 1
    assert "markers" in capsys.readouterr().err
    assert readme.read_text() == "# no markers\n"
    assert report.main([str(tmp_path / "missing.json"), *args]) == 1
    assert "cannot read benchmark JSON" in capsys.readouterr().err
