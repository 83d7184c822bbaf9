"""The prepared GPU check (perf/gpu_check.sh, perf/gpu_check.py, perf/gpu_check_vllm.py),
smoke-tested on CPU with the tiny shape: every figure present, each part's failure recorded without
stopping the others, the vLLM side isolated from the project's code."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from helpers.cli import ROOT

TINY_ARGS = ["--shape", "tiny", "--device", "cpu", "--train-steps", "1", "--gen-prompts", "4", "--gen-batch", "4"]
TINY_ARGS += ["--max-new-tokens", "2", "--seq-len", "32"]


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "perf" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_check_through_the_shell_script_reports_every_figure(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "VLLM_PYTHON"}
    env.update(OUT=str(tmp_path), PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(ROOT / "perf" / "gpu_check.sh"), *TINY_ARGS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("== nvidia-smi\n")
    assert "vLLM: SKIPPED (VLLM_PYTHON is not set" in proc.stdout
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    speeds = {(d["figure"], d["part"]): d["value"] for d in lines}
    for part in ("train_bf16", "train_fp32"):
        assert speeds[("train_tokens_per_s", part)] > 0
    for part in ("hf_gen_k1", "hf_gen_k8"):
        assert speeds[("gen_tokens_per_s", part)] > 0
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = data["parts"]
    assert [parts[p]["status"] for p in ("train_bf16", "hf_gen_k1", "hf_gen_k8", "train_fp32")] == ["ok"] * 4
    assert parts["vllm"]["status"] == "skipped"
    assert (parts["hf_gen_k1"]["adapters"], parts["hf_gen_k8"]["adapters"]) == (1, 8)
    assert parts["train_fp32"]["float32_matmul_precision"] == "highest"  # plain fp32, not TF32
    assert data["mfu_formula"].startswith("MFU = 6 * N * tokens_per_s / peak_flops")
    assert data["params"]["matmul_N"] == data["params"]["total"] - data["params"]["input_embedding"]
    assert "| train_bf16 |" in proc.stdout and "| hf_gen_k8 |" in proc.stdout


def test_mfu_is_6N_tokens_per_s_over_the_device_peak(gc):
    """N of the Llama-2-7B shape (built on the meta device: no memory) and the peak by device name."""

    class Ids:
        bos_token_id, eos_token_id, pad_token_id = 1, 2, 2

    model = gc.build_model(gc.SHAPES["llama2-7b"], Ids(), torch.bfloat16, "meta")
    counts = gc.param_counts(model)
    assert counts["total"] == 6_738_415_616  # Llama-2-7B's published size
    assert counts["matmul_N"] == 6_738_415_616 - 32000 * 4096
    assert gc.peak_for("NVIDIA H200", None)["bf16"] == 989.0
    assert gc.peak_for("NVIDIA H200", None)["fp32"] == 67.0
    assert gc.peak_for("NVIDIA H100 PCIe", None)["bf16"] == 756.0
    assert gc.peak_for("NVIDIA H100 80GB HBM3", None)["bf16"] == 989.0
    assert gc.peak_for("Some GPU", None)["bf16"] is None
    assert gc.peak_for("NVIDIA H200", (500.0, None)) == {"bf16": 500.0, "fp32": None, "source": "--peak-tflops"}
    assert gc.mfu(counts["matmul_N"], 10_000, 989.0) == pytest.approx(6 * 6_607_343_616 * 1e4 / 989e12)
    assert gc.mfu(counts["matmul_N"], 10_000, None) is None


def test_adapters_really_change_the_outputs(gc, tmp_path):
    from peft import PeftModel

    tok = gc.build_tokenizer(gc.SHAPES["tiny"]["vocab_size"])
    assert len(tok) == gc.SHAPES["tiny"]["vocab_size"]  # every id the model samples decodes
    model = gc.build_model(gc.SHAPES["tiny"], tok, torch.float32, "cpu")
    dirs = gc.make_adapters(model, 2, tmp_path)
    ids = tok(["abc def ghi"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = model(ids).logits
        peft_model = PeftModel.from_pretrained(model, dirs[0], adapter_name="a0")
        peft_model.load_adapter(dirs[1], adapter_name="a1")
        outs = []
        for name in ("a0", "a1"):
            peft_model.set_adapter(name)
            outs.append(peft_model(ids).logits)
    assert not torch.allclose(outs[0], base, atol=1e-4)
    assert not torch.allclose(outs[1], outs[0], atol=1e-4)


def test_a_failing_part_is_recorded_and_the_others_still_run(gc, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (planted)")

    fake = tmp_path / "fake_vllm_python"
    fake.write_text("#!/bin/sh\necho 'vllm: cannot start (planted)'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("VLLM_PYTHON", str(fake))
    monkeypatch.setattr(gc, "hf_gen_part", broken)
    rc = gc.main([*TINY_ARGS, "--out-dir", str(tmp_path), "--skip", "train_bf16,hf_gen_k1"])
    assert rc == 3
    parts = json.loads((tmp_path / "gpu_check.json").read_text())["parts"]
    assert parts["hf_gen_k8"] == {
        "status": "error",
        "error": "RuntimeError: CUDA out of memory (planted)",
        "wall_s": parts["hf_gen_k8"]["wall_s"],
    }
    assert parts["train_fp32"]["status"] == "ok" and parts["train_fp32"]["tokens_per_s"] > 0
    assert parts["train_bf16"] == {"status": "skipped", "reason": "--skip"}
    assert parts["vllm"]["status"] == "error" and parts["vllm"]["error"] == "vLLM process exit status 1"
    assert parts["vllm"]["log_tail"] == ["vllm: cannot start (planted)"]
    assert "error: RuntimeError: CUDA out of memory (planted)" in capsys.readouterr().out


def test_vllm_process_group_is_killed_at_its_cap(gc, tmp_path, monkeypatch):
    """vLLM starts worker processes: at the cap the whole group goes, children included."""
    pidfile = tmp_path / "child.pid"
    fake = tmp_path / "slow_python"
    fake.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    fake.chmod(0o755)
    monkeypatch.setenv("VLLM_PYTHON", str(fake))
    t = time.perf_counter()
    rec = gc.vllm_part({"cases": [1]}, tmp_path, cap_s=1.0, device="cpu")
    assert time.perf_counter() - t < 10
    assert rec["status"] == "error" and rec["error"] == "vLLM process timed out after 1 s"
    child = int(pidfile.read_text())
    time.sleep(0.2)
    stat = f"/proc/{child}/stat"
    state = open(stat).read().rsplit(")", 1)[1].split()[0] if os.path.exists(stat) else "gone"
    assert state in ("gone", "Z"), state  # killed (a zombie until the init process reaps it)


def test_vllm_ratio_is_vllm_over_hf_per_adapter_count(gc):
    parts = {"hf_gen_k1": {"tokens_per_s": 100.0}, "hf_gen_k8": {"tokens_per_s": 50.0}}
    rec = {"cases": {"1": {"tokens_per_s": 300.0}, "8": {"tokens_per_s": 400.0}}}
    assert gc.vllm_ratios(rec, parts)["ratio_vllm_over_hf"] == {"1": 3.0, "8": 8.0}


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--peak-tflops", "fast"], "--peak-tflops 'fast': expected BF16 or BF16,FP32 (positive TFLOP/s)"),
        (["--peak-tflops", "989,-1"], "--peak-tflops '989,-1': expected BF16 or BF16,FP32"),
        (["--skip", "train_bf16,warp"], "--skip 'train_bf16,warp': unknown part 'warp'"),
        (["--budget-s", "0"], "--budget-s 0.0: expected a positive number of seconds"),
        (["--gen-batch", "0"], "--gen-batch 0: expected a positive integer"),
        (["--shape", "llama3"], "argument --shape: invalid choice: 'llama3'"),
    ],
)
def test_bad_options_are_one_line_errors(gc, capsys, argv, says):
    with pytest.raises(SystemExit) as exc:
        gc.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: " in err and says in err


def test_vllm_side_imports_only_vllm_torch_and_the_standard_library():
    """It runs under vLLM's own python, where the project's pins (and value_harms) are absent."""
    tree = ast.parse((ROOT / "perf" / "gpu_check_vllm.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= {"__future__", "json", "os", "sys", "time", "pathlib", "typing", "vllm", "torch"}, names
