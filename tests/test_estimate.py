"""The GPU-hour estimate takes the throughput measured for the chosen engine and model, and says so."""

from __future__ import annotations

import json

from value_harms.tools.estimate import main, measured_gen_tps


def _gpu_check(shape: str) -> dict:
    """A gpu_check.json as perf/gpu_check.py writes it (only the fields the estimate reads)."""
    return {
        "issue": 12,
        "date_utc": "2026-12-01T10:00:00+00:00",
        "device_name": "NVIDIA H200",
        "shape": {"name": shape},
        "parts": {
            "train_bf16": {"status": "ok", "tokens_per_s": 9000.0},
            "hf_gen_k1": {"status": "ok", "adapters": 1, "tokens_per_s": 1500.0},
            "hf_gen_k8": {"status": "ok", "adapters": 8, "tokens_per_s": 900.0},
            "train_fp32": {"status": "error", "error": "out of memory"},
            "vllm": {"status": "ok", "cases": {"1": {"tokens_per_s": 6000.0}, "8": {"tokens_per_s": 4500.0}}},
        },
    }


def test_the_estimate_uses_the_gpu_checks_figures_for_the_paper_model(tmp_path, capsys):
    f = tmp_path / "gpu_check.json"
    f.write_text(json.dumps(_gpu_check("llama2-7b")))
    assert measured_gen_tps(f, "vllm", "llama2_7b")["tokens_per_s"] == 4500.0, "the most adapters measured"
    assert measured_gen_tps(f, "vllm", "llama2_7b", adapters=1)["tokens_per_s"] == 6000.0
    assert main(["experiment=paper", "--engine", "vllm", "--throughput", str(f)]) == 0
    out = capsys.readouterr().out
    assert "at 9,000 tok/s (measured on NVIDIA H200 (2026-12-01))" in out
    assert "at 4,500 tok/s" in out and "measured for engine vllm, 8 adapter(s), on NVIDIA H200" in out
    assert main(["experiment=paper", "--engine", "hf", "--throughput", str(f)]) == 0
    hf = capsys.readouterr().out
    assert "at 900 tok/s" in hf
    # 730 GPU-h at the assumed 2,000 tok/s (the README's figure) -> 5.25 B tokens / 4,500 tok/s = 324 h
    assert "generation: 5.25 B tokens at 4,500 tok/s = 324 GPU-hours" in out


def test_a_smoke_run_shape_or_a_missing_file_never_stands_for_the_paper_model(tmp_path, capsys):
    f = tmp_path / "gpu_check.json"
    f.write_text(json.dumps(_gpu_check("tiny")))
    assert measured_gen_tps(f, "vllm", "llama2_7b") is None
    assert measured_gen_tps(f, "vllm", "tiny-shape")["tokens_per_s"] == 4500.0
    assert main(["experiment=paper", "--throughput", str(tmp_path / "none.json")]) == 0
    out = capsys.readouterr().out
    assert "2,000 tok/s assumed: no figure measured for engine hf and model llama2_7b" in out
    assert "5,000 tok/s (assumed)" in out


def test_bench_engines_records_are_read_as_they_are(tmp_path, capsys):
    f = tmp_path / "throughput.json"
    rec = {"engine": "vllm", "model": "smollm2_135m", "adapters": 2, "tokens_per_s": 170.5, "device": "cpu (2 cores)"}
    f.write_text(json.dumps([rec, {**rec, "engine": "hf", "tokens_per_s": 160.0}]))
    assert main(["experiment=demo", "generation.engine=vllm", "--throughput", str(f)]) == 0
    assert "at 170 tok/s" in capsys.readouterr().out  # the config's engine chooses the figure
