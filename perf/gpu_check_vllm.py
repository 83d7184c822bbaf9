"""vLLM side of perf/gpu_check.py, run under vLLM's own python (``$VLLM_PYTHON``).

    $VLLM_PYTHON perf/gpu_check_vllm.py SPEC.json RESULT.json

Imports only vllm, torch and the standard library (vLLM's pins differ from the project's, so this
file never imports value_harms). SPEC holds the model folder, the adapter folders, the prompts, the
sampling settings and the cases (numbers of adapters mixed). For each case, the prompts are sent in
one ``LLM.generate`` call, request j with adapter j mod K and its own seed j, ``ignore_eos`` so each
request yields exactly ``max_new_tokens`` tokens; tokens/s counts the tokens returned. RESULT is
rewritten after each case, so a run cut short still reports what it measured.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def write(result: dict[str, Any], path: str) -> None:
    tmp = path + ".tmp"
    Path(tmp).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def build_llm(spec: dict[str, Any]):
    from vllm import LLM

    return LLM(
        model=spec["model_dir"],
        tokenizer=spec["model_dir"],
        dtype=spec["dtype"],
        load_format=spec["load_format"],
        enforce_eager=spec["enforce_eager"],
        enable_lora=True,
        max_loras=max(spec["cases"]),
        max_lora_rank=spec["lora_rank"],
        max_model_len=spec["max_model_len"],
        seed=0,
        **spec.get("engine_kwargs", {}),
    )


def run_case(llm, spec: dict[str, Any], k: int) -> dict[str, Any]:
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    prompts = spec["prompts"]
    loras = [LoRARequest(f"a{i}", i + 1, path) for i, path in enumerate(spec["adapters"][:k])]
    params = [
        SamplingParams(max_tokens=spec["max_new_tokens"], seed=j, ignore_eos=True, **spec["sampling"])
        for j in range(len(prompts))
    ]
    per_row = [loras[j % k] for j in range(len(prompts))]
    warm = min(len(prompts), max(8, k))  # every adapter of the case is loaded before the clock starts
    llm.generate(prompts[:warm], params[:warm], lora_request=per_row[:warm], use_tqdm=False)
    t = time.perf_counter()
    outs = llm.generate(prompts, params, lora_request=per_row, use_tqdm=False)
    secs = time.perf_counter() - t
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    texts = [o.outputs[0].text for o in outs]
    return {
        "tokens_per_s": tokens / secs,
        "tokens": tokens,
        "prompts": len(prompts),
        "adapters": k,
        "seconds": secs,
        "distinct_outputs": len(set(texts)),
    }


def main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    import torch
    import vllm

    result: dict[str, Any] = {
        "status": "ok",
        "versions": {"vllm": vllm.__version__, "torch": torch.__version__},
        "load_format": spec["load_format"],
        "enforce_eager": spec["enforce_eager"],
        "engine_kwargs": spec.get("engine_kwargs", {}),
        "cases": {},
    }
    t = time.perf_counter()
    llm = build_llm(spec)
    result["startup_s"] = time.perf_counter() - t
    write(result, result_path)
    for k in spec["cases"]:
        result["cases"][str(k)] = run_case(llm, spec, k)
        write(result, result_path)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: gpu_check_vllm.py SPEC.json RESULT.json", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
