"""`pong-train bench` in its tiny mode: proves the benchmark runs end to end; it is not a timed test."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def test_tiny_bench_reports_every_figure_and_writes_its_files(tmp_path):
    proc = run_cli("bench", "--tiny", "--json", "--storage-path", str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("ratio_vs_stock", "sampling_fraction_of_limit", "end_to_end_steps_per_s", "stock_steps_per_s",
                "limit_frames_per_s"):
        assert report[key] > 0, key
    assert report["end_to_end_steps_per_s"] / report["stock_steps_per_s"] == pytest.approx(report["ratio_vs_stock"])
    saved = json.loads((tmp_path / report["out_dir"].split("/")[-1] / "bench.json").read_text())
    assert saved["ratio_vs_stock"] == report["ratio_vs_stock"] and len(saved["runs"]["stock"]) == 1
    assert (tmp_path / report["out_dir"].split("/")[-1] / "bench.png").stat().st_size > 1000
    assert "(d)/(c) end to end vs stock" in proc.stdout
