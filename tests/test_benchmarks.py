"""The benchmark scripts still run (figures come from running them in full by hand)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_engine_benchmark_prints_its_ratio(capsys) -> None:
    benchmark = load("engine_vs_diffusers")
    assert benchmark.main(["--tiny", "--rounds", "1", "--size", "64", "--steps", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # The engine ran twice (warm-up and one round), 2 steps with a preview each.
    assert summary["previews_made"] == 4
    assert summary["ratio_median"] > 0 and summary["preview_ms"] > 0


@pytest.mark.slow
def test_memory_benchmark_runs_the_app_path(capsys) -> None:
    benchmark = load("memory_generations")
    assert benchmark.main(["--generations", "3", "--warm-up", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["history_rows"] == 4  # every generation was written and recorded
    assert summary["previews"] == 3 + 2 + 3 + 2  # img2img at strength 0.75 runs 2 of 3 steps
    assert summary["rss_after_warm_up_mb"] > 0


@pytest.mark.slow
def test_cpu_memory_benchmark_measures_a_generation_process(tiny_model: Path, tmp_path) -> None:
    benchmark = load("cpu_memory")
    peak_gb, seconds = benchmark.peak_of_generation(tiny_model, 64, tmp_path)
    assert 0.1 < peak_gb < 8 and seconds > 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


@pytest.mark.slow
def test_flow_family_benchmark_runs_a_family_in_both_layouts(capsys) -> None:
    benchmark = load("flow_families")
    args = ["--families", "zimage", "--size", "64", "--steps", "2", "--rounds", "1"]
    assert benchmark.main(args) == 0
    out = capsys.readouterr().out
    assert "zimage       folder" in out and "zimage       comfyui" in out


def test_controlnet_step_benchmark_prints_its_ratio(capsys) -> None:
    benchmark = load("controlnet_step")
    assert benchmark.main(["--tiny", "--size", "64", "--rounds", "1"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["no_unit_s"] > 0 and figures["one_unit_s"] > 0 and figures["ratio"] > 0


def test_cpu_speed_benchmark_compares_float32_with_auto(capsys, monkeypatch) -> None:
    monkeypatch.setenv("SDSTUDIO_SD_CPU_PRECISION", "bfloat16")  # whatever this CPU has
    benchmark = load("cpu_speed")
    assert benchmark.main(["--tiny", "--sizes", "32", "--rounds", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["settings"] == {"float32": "float32", "auto": "bfloat16"}
    for what in ("cfg_step", "vae_decode"):
        entry = summary["results"]["32"][what]
        assert entry["float32"]["min_s"] > 0 and entry["speedup_median"] > 0
        assert 0 < entry["relative_error"] < 0.1  # bfloat16 computed, close to float32


def test_gpu_benchmark_compares_the_fast_path_with_float32(capsys) -> None:
    benchmark = load("gpu_speed")
    argv = ["--device", "cpu", "--tiny", "--size", "64", "--rounds", "1", "--no-compile"]
    assert benchmark.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sd1"]
    assert summary["cfg_step/float32"]["speedup"] == 1.0
    for name in ("cfg_step/float32_tf32", "cfg_step/fast_path", "vae_decode/fast_path"):
        assert summary[name]["median_s"] > 0
    assert 0 < summary["cfg_step/fast_path"]["relative_error"] < 0.05  # bfloat16 on the CPU
