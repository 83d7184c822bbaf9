"""Same seed, same inputs -> the same adapter and the same generations on CPU; another seed -> others.

Runs in-process through the task functions (`run_train`, `run_evaluate`), tiny model, separate store
folders so that nothing is skipped or read back from a cache.
"""

from __future__ import annotations

import json
from pathlib import Path


def _base(tmp_path, name, cache_dir, data_dir):
    return [
        "model=tiny",
        "logger=none",
        f"paths.output_dir={tmp_path}/{name}/out",
        f"paths.store_dir={tmp_path}/{name}/store",
        f"paths.cache_dir={cache_dir}",
        f"paths.data_dir={data_dir}",
        "generation.progress=false",
    ]


TRAIN = [
    "value_profile=Pow",
    "vim_stage=ag",
    "debug=fast",
    "trainer.enable_progress_bar=false",
    "alignment.enabled=false",
    "vim_stage.lr=0.01",
]


def test_same_seed_same_adapter_other_seed_other_adapter(compose, tmp_path, cache_dir, data_dir):
    from value_harms.train.task import run_train

    a = run_train(compose("train", _base(tmp_path, "a", cache_dir, data_dir) + TRAIN))
    b = run_train(compose("train", _base(tmp_path, "b", cache_dir, data_dir) + TRAIN))
    c = run_train(compose("train", _base(tmp_path, "c", cache_dir, data_dir) + TRAIN + ["train.seed=7"]))
    for r in (a, b, c):
        assert not r["steps"]["ag"].get("skipped") and r["steps"]["ag"]["global_step"] > 0
    assert a["store_dir"] != b["store_dir"]
    assert a["adapter_sha256"] == b["adapter_sha256"], "same config and seed gave different adapters"
    assert a["steps"]["ag"]["best_val_loss"] == b["steps"]["ag"]["best_val_loss"]
    assert c["adapter_sha256"] != a["adapter_sha256"], "train.seed does not change the adapter"


# Sampling at temperature 1 / top_p 1 so that a different seed visibly changes the text of the
# (random) tiny model; the paper's 0.1 / 0.75 can be near-greedy there.
EVAL = [
    "benchmark=rtp",
    "benchmark.limit=3",
    "benchmark.num_samples=2",
    "benchmark.max_new_tokens=8",
    "benchmark.temperature=1.0",
    "benchmark.top_p=1.0",
    "scorer=profanity_check",
    "generation.cache=false",
]


def _continuations(res) -> list[tuple[str, int, str]]:
    rows = [json.loads(x) for x in (Path(res["run_dir"]) / "samples.jsonl").read_text().splitlines() if x]
    return [(r["id"], r["sample"], r["continuation"]) for r in rows]


def test_same_seed_same_generations_other_seed_others(compose, tmp_path, cache_dir, data_dir):
    from value_harms.eval.task import run_evaluate

    extra = [*EVAL, "generation.batch_size=4"]
    a = run_evaluate(compose("evaluate", _base(tmp_path, "a", cache_dir, data_dir) + extra))
    b = run_evaluate(compose("evaluate", _base(tmp_path, "b", cache_dir, data_dir) + extra))
    c = run_evaluate(compose("evaluate", _base(tmp_path, "c", cache_dir, data_dir) + extra + ["generation.seed=7"]))
    for r in (a, b, c):
        assert not r["skipped"] and r["generation"]["generated"] == 3 and r["generation"]["cached"] == 0
    ca, cb, cc = _continuations(a), _continuations(b), _continuations(c)
    assert len(ca) == 6 and any(t for _, _, t in ca)
    assert ca == cb, "same seed gave different generations"
    assert a["metrics"] == b["metrics"]
    assert ca != cc, "generation.seed does not change the sampled text"
    # the two samples of one prompt are drawn with different per-row seeds
    assert any(ca[i][2] != ca[i + 1][2] for i in range(0, 6, 2))
