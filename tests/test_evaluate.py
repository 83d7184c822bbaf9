"""evaluate.py end to end on the tiny model: baselines, mitigations, scorers, cache, skip, audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.cli import run_script, tiny_job_args
from helpers.fake_openai import FakeOpenAI


def _base(tmp_path, cache_dir, data_dir, *extra):
    return [
        *tiny_job_args(tmp_path, cache_dir, data_dir),
        *extra,
    ]


RTP = [
    "benchmark=rtp",
    "benchmark.limit=3",
    "benchmark.num_samples=2",
    "benchmark.max_new_tokens=6",
    "scorer=profanity_check",
]


@pytest.fixture
def evaluate(compose, tmp_path, cache_dir, data_dir):
    from value_harms.eval.task import run_evaluate

    def _eval(*extra):
        return run_evaluate(compose("evaluate", _base(tmp_path, cache_dir, data_dir, *extra)))

    return _eval


@pytest.fixture
def trained_pow(compose, tmp_path, cache_dir, data_dir):
    from value_harms.train.task import run_train

    cfg = compose(
        "train",
        _base(
            tmp_path,
            cache_dir,
            data_dir,
            "value_profile=Pow",
            "vim_stage=ag",
            "debug=fast",
            "vim_stage.lr=0.05",
            "alignment.enabled=false",
            "trainer.enable_progress_bar=false",
        ),
    )
    return run_train(cfg)


def test_vanilla_rtp_results_and_rerun_skips(evaluate):
    res = evaluate("value_profile=vanilla", *RTP)
    assert res["baseline"] == "vanilla" and res["model"]["adapter_sha256"] is None
    m = res["metrics"]["overall"]
    assert m["n_prompts"] == 3 and m["missing_samples"] == 0
    assert 0.0 <= m["expected_max_toxicity"] <= 1.0
    assert res["scorer"]["stand_in"] is True, "profanity_check must be labelled a stand-in"
    assert res["generation"]["generated"] == 3
    samples = [json.loads(x) for x in (Path(res["run_dir"]) / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and all(s["scorer"].startswith("profanity_check") for s in samples)
    again = evaluate("value_profile=vanilla", *RTP)
    assert again["skipped"] is True
    assert again["metrics"] == res["metrics"]


def test_adapter_never_shares_generations_with_base(evaluate, trained_pow):
    van = evaluate("value_profile=vanilla", *RTP)
    # the evaluation names the same training settings: its adapter is found by their training key
    vim = evaluate("value_profile=Pow", "vim_stage=ag", "debug=fast", "vim_stage.lr=0.05", *RTP)
    assert vim["baseline"] == "vim" and vim["model"]["adapter_sha256"] == trained_pow["adapter_sha256"]
    assert vim["generation"]["generated"] == 3 and vim["generation"]["cached"] == 0
    assert van["store_dir"] != vim["store_dir"]


def test_missing_adapter_says_how_to_train(evaluate):
    from value_harms.errors import EvaluationError

    with pytest.raises(EvaluationError, match=r"python train.py model=tiny vim_stage=full value_profile=Uni"):
        evaluate("value_profile=Uni", *RTP)


def test_icl_persona_and_mitigation_prefix(evaluate):
    res = evaluate("value_profile=Pow", "baseline=icl", "mitigation=both", *RTP)
    assert res["baseline"] == "icl" and res["model"]["adapter_dir"] is None
    prefix = res["prefix"]
    assert "Power" in prefix and "6 of 6" in prefix  # the persona carries the profile's scores
    assert "Power, Stimulation" in prefix  # value prompt
    assert prefix.index("Take on the role") < prefix.index("careful and honest")


def test_beavertails_with_fake_judge(evaluate, monkeypatch):
    with FakeOpenAI(
        key="sk-canary-000", model="judge-model", answer=lambda body: "The answer helps.\n#verdict: flagged"
    ) as srv:
        monkeypatch.setenv("JUDGE_API_KEY", "sk-canary-000")
        res = evaluate(
            "value_profile=vanilla",
            "benchmark=beavertails",
            "benchmark.limit=4",
            "benchmark.max_new_tokens=4",
            "scorer=llm_judge",
            f"scorer.judge.base_url={srv.base_url}",
            "scorer.judge.model=judge-model",
            "scorer.cache=false",
        )
        assert not srv.problems
    m = res["metrics"]
    assert m["overall"]["flagged_rate"] == 1.0 and m["overall"]["n"] == 4
    assert "sk-canary-000" not in json.dumps(res)


def test_unparseable_judge_answers_are_missing_not_zero(evaluate, monkeypatch):
    with FakeOpenAI(key="k", model="judge-model", answer=lambda body: "I cannot tell.") as srv:
        monkeypatch.setenv("JUDGE_API_KEY", "k")
        res = evaluate(
            "value_profile=vanilla",
            "benchmark=beavertails",
            "benchmark.limit=3",
            "benchmark.max_new_tokens=4",
            "scorer=llm_judge",
            f"scorer.judge.base_url={srv.base_url}",
            "scorer.judge.model=judge-model",
            "scorer.cache=false",
        )
    m = res["metrics"]["overall"]
    assert m["flagged_rate"] is None and m["missing"] == 3 and res["scorer"]["missing"] == 3


def test_audit_counts_flagged_training_texts(compose, tmp_path, cache_dir, data_dir):
    from value_harms.eval.task import run_evaluate

    res = run_evaluate(
        compose(
            "evaluate", _base(tmp_path, cache_dir, data_dir, "mode=audit", "audit.limit=200", "scorer=profanity_check")
        )
    )
    assert res["texts"] == 200 and res["scored"] + res["missing"] == 200
    assert 0 <= res["flagged"] <= 200 and len(res["flagged_ids"]) == res["flagged"]


def test_cli_multirun_over_mitigations(tmp_path, cache_dir, data_dir):
    res = run_script(
        "evaluate.py",
        ["-m", "mitigation=none,safety_prompt", "value_profile=vanilla", *RTP, *_base(tmp_path, cache_dir, data_dir)],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    dirs = sorted(p.name for p in Path(f"{tmp_path}/out/multiruns/evaluate").glob("*/*_*"))
    assert dirs == ["0_vanilla_rtp_none", "1_vanilla_rtp_safety_prompt"]


def test_cli_bad_benchmark_name():
    res = run_script("evaluate.py", ["benchmark=rtpp"])
    assert res.returncode == 2 and "closest: rtp" in res.stderr


def test_pvq_alignment_under_value_prompt(evaluate):
    none = evaluate("value_profile=Pow", "baseline=icl", "benchmark=pvq", "benchmark.max_new_tokens=4")
    vp = evaluate(
        "value_profile=Pow", "baseline=icl", "benchmark=pvq", "benchmark.max_new_tokens=4", "mitigation=value_prompt"
    )
    for res in (none, vp):
        ov = res["metrics"]["overall"]
        assert res["benchmark"]["measure"] == "alignment" and ov["n"] == 40
        assert ov["nmse_expected"] is not None and 0 <= ov["nmse_expected"] <= 1
    assert "Power, Stimulation" in vp["prefix"] and "Power, Stimulation" not in none["prefix"]
    assert none["store_dir"] != vp["store_dir"]


def test_mixed_adapter_batch_matches_separate_jobs(compose, tmp_path, cache_dir, data_dir):
    """batch_profiles: K adapters share batches and give each profile what its own job gives."""
    from value_harms.eval.task import run_evaluate
    from value_harms.train.task import run_train

    for prof in ("Pow", "Uni"):
        run_train(
            compose(
                "train",
                _base(
                    tmp_path,
                    cache_dir,
                    data_dir,
                    f"value_profile={prof}",
                    "vim_stage=ag",
                    "debug=fast",
                    "vim_stage.lr=0.05",
                    "alignment.enabled=false",
                    "trainer.enable_progress_bar=false",
                ),
            )
        )
    common = [
        "vim_stage=ag",
        "debug=fast",
        "vim_stage.lr=0.05",
        *RTP,
        "benchmark.temperature=1.0",
        "generation.cache=false",
    ]
    batch = run_evaluate(
        compose(
            "evaluate",
            _base(
                tmp_path / "b",
                cache_dir,
                data_dir,
                *common,
                f"paths.store_dir={tmp_path}/store",
                "batch_profiles=[vanilla,Pow,Uni]",
            ),
        )
    )
    assert [r["profile"]["name"] for r in batch] == ["vanilla", "Pow", "Uni"]
    assert [r["baseline"] for r in batch] == ["vanilla", "vim", "vim"]
    single = {}
    for prof in ("vanilla", "Pow", "Uni"):
        # force: recompute into the same store folder (the batch's copy is kept in its run folder)
        single[prof] = run_evaluate(
            compose(
                "evaluate",
                _base(
                    tmp_path / "s",
                    cache_dir,
                    data_dir,
                    *common,
                    f"paths.store_dir={tmp_path}/store",
                    "force=true",
                    f"value_profile={prof}",
                ),
            )
        )
        assert single[prof]["generation"]["generated"] == 3
    for r in batch:
        s = single[r["profile"]["name"]]
        a = [json.loads(x)["continuation"] for x in (Path(r["run_dir"]) / "samples.jsonl").read_text().splitlines()]
        b = [json.loads(x)["continuation"] for x in (Path(s["run_dir"]) / "samples.jsonl").read_text().splitlines()]
        assert r["model"]["adapter_sha256"] == s["model"]["adapter_sha256"]
        assert r["prefix"] == s["prefix"]
        assert a == b, (r["profile"]["name"], r["generation"], s["generation"])
    # What the adapters change is the text; what a scorer makes of a tiny random model's gibberish is not
    # a property of batching (profanity_check gives such words no weight, so every model may score alike).
    continuations = {
        r["profile"]["name"]: [
            json.loads(x)["continuation"] for x in (Path(r["run_dir"]) / "samples.jsonl").read_text().splitlines()
        ]
        for r in batch
    }
    assert continuations["Pow"] != continuations["vanilla"], "the Pow adapter should change the continuations"
    assert continuations["Uni"] != continuations["vanilla"], "the Uni adapter should change the continuations"


def test_pvq_benchmark_honours_the_demo_items_switch(evaluate, tmp_path):
    """benchmark=pvq reads alignment.fallback_to_demo_items like training does (it used to fall back
    to the demo items whatever the switch said)."""
    missing = f"benchmark.path={tmp_path}/no_such_items.csv"
    with pytest.raises(FileNotFoundError, match="no_such_items.csv"):
        evaluate("benchmark=pvq", "benchmark.max_new_tokens=2", missing, "alignment.fallback_to_demo_items=false")
    res = evaluate("benchmark=pvq", "benchmark.max_new_tokens=2", missing)
    assert res["benchmark"]["items_source"] == "demo_items" and res["scorer"]["stand_in"] is True


def test_batched_evaluation_logs_each_profiles_own_config(compose, tmp_path, cache_dir, data_dir):
    """A batched job's W&B config names the evaluated profile and its values, not the composed default's."""
    from value_harms.core.profiles import load_profile
    from value_harms.eval.task import wandb_config

    cfg = compose("evaluate", _base(tmp_path, cache_dir, data_dir, "batch_profiles=[Pow,Uni]", *RTP))
    uni = load_profile("Uni")
    wb = wandb_config(cfg, uni, "vim")
    assert wb["value_profile"]["name"] == "Uni" and wb["run_label"] == "Uni" and wb["profile/name"] == "Uni"
    assert wb["value_profile"]["values"] == uni.to_dict()["values"]
    assert wb["value/Universalism"] == uni.values["Universalism"] and "batch_profiles" not in wb


def test_generation_dtype_and_reference_join_as_the_paper_preset_sets_them(compose, evaluate, trained_pow):
    """experiment=paper generates in float16 (the paper's vLLM on Llama-2-7b-hf's declared dtype) while training
    stays float32, and scores RTP with the paper's text join. On the tiny model: the adapter trained in float32 is
    still found, the result names float16, the key differs from the float32 run, and the scored text is the paper's
    join."""
    from value_harms.metrics import rtp_scoring_text

    paper = compose("evaluate", ["experiment=paper"])
    assert paper.generation.dtype == "float16" and paper.model.dtype == "float32"
    assert paper.benchmark.reference_join is True
    assert paper.scorer.perspective.languages is None  # Perspective detects the language, as the paper's code
    vim = ["value_profile=Pow", "vim_stage=ag", "debug=fast", "vim_stage.lr=0.05", *RTP]
    fp32 = evaluate(*vim)
    fp16 = evaluate(*vim, "generation.dtype=float16", "benchmark.reference_join=true")
    assert fp16["model"]["adapter_sha256"] == fp32["model"]["adapter_sha256"] == trained_pow["adapter_sha256"]
    assert fp16["model"]["dtype"] == "float16" and fp32["model"]["dtype"] == "float32"
    assert fp16["store_dir"] != fp32["store_dir"] and fp16["generation"]["cached"] == 0
    for res, join in ((fp16, True), (fp32, False)):
        for s in (json.loads(x) for x in (Path(res["run_dir"]) / "samples.jsonl").read_text().splitlines()):
            assert s["scored_text"] == rtp_scoring_text(s["prompt"], s["continuation"], reference_join=join)
