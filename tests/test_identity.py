"""A stored result is exactly what its config asks for (identity, completeness, reuse).

Each test reproduces one way the promise broke before the store keyed results by content."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from helpers.cli import run_script, tiny_job_args
from helpers.fake_perspective import FakePerspective

KEY = "test-key-5f3a9c"
RTP = ["benchmark=rtp", "benchmark.limit=3", "benchmark.num_samples=2", "benchmark.max_new_tokens=6"]
FAST_TRAIN = ["vim_stage=ag", "debug=fast", "vim_stage.lr=0.05", "trainer.enable_progress_bar=false"]


def _base(tmp_path, cache_dir, data_dir, *extra):
    return [
        *tiny_job_args(tmp_path, cache_dir, data_dir),
        *extra,
    ]


@pytest.fixture
def cfgs(compose, tmp_path, cache_dir, data_dir):
    def _cfg(task, *extra):
        return compose(task, _base(tmp_path, cache_dir, data_dir, *extra))

    return _cfg


@pytest.fixture
def train(cfgs):
    from value_harms.train.task import run_train

    return lambda *extra: run_train(cfgs("train", "alignment.enabled=false", *extra))


@pytest.fixture
def evaluate(cfgs):
    from value_harms.eval.task import run_evaluate

    return lambda *extra: run_evaluate(cfgs("evaluate", *extra))


# --------------------------------------------------------------------------------------------------
# 1. the adapter is the one the evaluation's own config trains, never the newest of the same name


def test_evaluate_uses_the_adapter_of_its_own_training_key(train, evaluate):
    plain = train("value_profile=Pow", *FAST_TRAIN)
    ablation = train("value_profile=Pow", *FAST_TRAIN, "train.lora_r=4")  # newer, same model/profile/stage
    assert ablation["adapter_sha256"] != plain["adapter_sha256"]
    res = evaluate("value_profile=Pow", *FAST_TRAIN, *RTP, "scorer=profanity_check")
    assert res["model"]["adapter_sha256"] == plain["adapter_sha256"]
    assert res["train_key"] == plain["train_key"]
    res4 = evaluate("value_profile=Pow", *FAST_TRAIN, "train.lora_r=4", *RTP, "scorer=profanity_check")
    assert res4["model"]["adapter_sha256"] == ablation["adapter_sha256"]
    assert res4["store_dir"] != res["store_dir"]


def test_untrained_config_names_the_exact_train_command(train, evaluate):
    from value_harms.errors import EvaluationError

    train("value_profile=Pow", *FAST_TRAIN)
    with pytest.raises(EvaluationError) as err:  # same profile, another learning rate: not trained
        evaluate("value_profile=Pow", *FAST_TRAIN[:2], "vim_stage.lr=0.01", *RTP, "scorer=profanity_check")
    msg = str(err.value)
    assert "\n" not in msg and "python train.py" in msg and "value_profile=Pow" in msg


def test_train_command_carries_the_training_overrides(cfgs, tmp_path, cache_dir, data_dir):
    """Through the CLI the printed command repeats the training-relevant overrides of the evaluation."""
    proc = run_script(
        "evaluate.py",
        _base(tmp_path, cache_dir, data_dir, "value_profile=Uni", "train.lora_r=4", *RTP, "scorer=profanity_check"),
    )
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error:") and "python train.py" in line and "train.lora_r=4" in line
    assert "benchmark=" not in line.split("python train.py", 1)[1]


# --------------------------------------------------------------------------------------------------
# 3. keys cover content: data files, persona values, endpoints, the tiny model's seed, local weights


def test_train_key_follows_data_file_content(cfgs, tmp_path, data_dir):
    from value_harms.core.profiles import profile_from_cfg
    from value_harms.train import keys as train_keys

    copy = tmp_path / "data" / "vim" / "valueEval_10.csv"
    copy.parent.mkdir(parents=True)
    shutil.copy(data_dir / "vim" / "valueEval_10.csv", copy)
    cfg = cfgs("train", "value_profile=Pow", f"paths.data_dir={tmp_path}/data")
    prof = profile_from_cfg(cfg.value_profile)
    before = train_keys.train_key(cfg, prof, cfg.paths.data_dir)
    with open(copy, "a", encoding="utf-8") as fh:  # same path, one more argument
        fh.write(copy.read_text(encoding="utf-8").splitlines()[-1] + "\n")
    assert train_keys.train_key(cfg, prof, cfg.paths.data_dir) != before
    # paths, logging and progress do not change the key
    cfg2 = cfgs(
        "train",
        "value_profile=Pow",
        f"paths.data_dir={tmp_path}/data",
        "trainer.enable_progress_bar=false",
        "logger=wandb",
        f"paths.output_dir={tmp_path}/elsewhere",
        "train.num_threads=1",
    )
    assert train_keys.train_key(cfg2, prof, cfg2.paths.data_dir) == train_keys.train_key(cfg, prof, cfg.paths.data_dir)


def test_icl_persona_values_are_part_of_the_key(evaluate):
    # benchmark=pvq: the persona (about 700 tokens of the tiny tokenizer) fits the tiny model's context
    pvq = ["benchmark=pvq", "benchmark.max_new_tokens=4"]
    a = evaluate("value_profile=Uni", "baseline=icl", *pvq)
    b = evaluate("value_profile=Uni", "baseline=icl", "value_profile.values.power=6", *pvq)
    assert b["skipped"] is False and a["store_dir"] != b["store_dir"]
    assert b["prefix"] != a["prefix"]


def test_tiny_seed_changes_model_identity_and_generations(evaluate):
    a = evaluate("value_profile=vanilla", *RTP, "scorer=profanity_check")
    b = evaluate("value_profile=vanilla", "model.tiny.seed=7", *RTP, "scorer=profanity_check")
    assert b["skipped"] is False and a["store_dir"] != b["store_dir"]
    assert b["generation"]["cached"] == 0, "another model's generations must never be reused"


def test_local_weights_are_keyed_by_content(tmp_path, cache_dir):
    from value_harms.models import identity as model_identity
    from value_harms.models.loading import resolve_model_dir

    built = resolve_model_dir({"name": "tiny", "source": "tiny"}, cache_dir)
    local = tmp_path / "my-model"
    shutil.copytree(built, local)
    cfg = {"name": "mine", "source": "hub", "pretrained": str(local), "dtype": "float32"}
    before = model_identity.base_identity(cfg)
    assert "local_sha256" in before and "hub_id" not in before
    renamed = dict(cfg, name="other-name")
    assert model_identity.base_identity(renamed) == before, "the config name is not the weights' identity"
    weights = next(local.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert model_identity.base_identity(cfg) != before


def test_perspective_endpoint_is_part_of_score_identity(evaluate, monkeypatch):
    one, two = FakePerspective(valid_key=KEY).start(), FakePerspective(valid_key=KEY).start()
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    try:
        scorer = ["scorer=perspective", "scorer.fallback=[]", "scorer.perspective.qps=1000"]
        a = evaluate("value_profile=vanilla", *RTP, *scorer, f"scorer.perspective.endpoint={one.endpoint}")
        assert a["status"] == "complete" and len(one.requests) > 0
        b = evaluate("value_profile=vanilla", *RTP, *scorer, f"scorer.perspective.endpoint={two.endpoint}")
        assert b["skipped"] is False
        assert len(two.requests) >= 6, "scores cached against another endpoint must not be reused"
    finally:
        one.stop()
        two.stop()


# --------------------------------------------------------------------------------------------------
# 5 / 6. complete means complete: missing scores are retried, a stand-in is replaced when it can be


def test_missing_scores_make_a_partial_result_that_a_rerun_completes(evaluate, monkeypatch):
    srv = FakePerspective(valid_key=KEY).start()
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    try:
        scorer = [
            "scorer=perspective",
            "scorer.fallback=[]",
            f"scorer.perspective.endpoint={srv.endpoint}",
            "scorer.perspective.qps=1000",
            "scorer.perspective.max_retries=0",
            "scorer.probe=false",
        ]
        srv.fail_next("400", 2)  # two texts fail for good in this run (no retry on 400)
        first = evaluate("value_profile=vanilla", *RTP, *scorer)
        assert first["status"] == "partial" and first["scorer"]["missing"] == 2
        store = Path(first["store_dir"])
        assert (store / "PARTIAL").is_file() and not (store / "COMPLETE").is_file()
        n_before = len(srv.requests)
        second = evaluate("value_profile=vanilla", *RTP, *scorer)
        assert second["skipped"] is False and second["status"] == "complete"
        assert len(srv.requests) - n_before == 2, "only the missing scores are requested again"
        assert second["generation"]["generated"] == 0, "generations are reused"
        third = evaluate("value_profile=vanilla", *RTP, *scorer)
        assert third["skipped"] is True and len(srv.requests) - n_before == 2
    finally:
        srv.stop()


def test_stand_in_result_is_rescored_once_perspective_is_available(evaluate, monkeypatch, caplog):
    srv = FakePerspective(valid_key=KEY).start()
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    try:
        scorer = [
            "scorer=default",
            f"scorer.perspective.endpoint={srv.endpoint}",
            "scorer.perspective.qps=1000",
            "scorer.fallback=[profanity_check]",
        ]
        first = evaluate("value_profile=vanilla", *RTP, *scorer)
        assert first["scorer"]["stand_in"] is True and not srv.requests
        monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
        caplog.clear()
        second = evaluate("value_profile=vanilla", *RTP, *scorer)
        assert second["skipped"] is False and second["generation"]["generated"] == 0
        assert sum("re-scoring" in r.getMessage() for r in caplog.records) == 1, "said once"
        assert set(second["scorer"]["by_scorer"]) == {"perspective:TOXICITY"}
        assert second["scorer"]["stand_in"] is False
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------------------
# 7. damaged store files are detected and recomputed


def test_truncated_samples_file_is_detected_and_recomputed(evaluate, caplog):
    first = evaluate("value_profile=vanilla", *RTP, "scorer=profanity_check")
    samples = Path(first["store_dir"]) / "samples.jsonl"
    text = samples.read_text()
    samples.write_text(text[: len(text) // 2])
    again = evaluate("value_profile=vanilla", *RTP, "scorer=profanity_check")
    assert again["skipped"] is False
    damaged = [r for r in caplog.records if "damaged" in r.getMessage()]
    assert len(damaged) == 1 and "samples.jsonl" in damaged[0].getMessage(), "said once, not once per look"
    assert samples.read_text() == text
    run_copy = Path(again["run_dir"]) / "samples.jsonl"
    assert len(run_copy.read_text().splitlines()) == 6
    status = json.loads((Path(again["run_dir"]) / "status.json").read_text())
    assert status["status"] == "complete" and status["store_dir"] == again["store_dir"], "store_dir kept at the end"


def test_edited_train_result_is_detected(train, caplog):
    first = train("value_profile=Pow", *FAST_TRAIN)
    path = Path(first["store_dir"]) / "train_result.json"
    data = json.loads(path.read_text())
    data["adapter_sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    again = train("value_profile=Pow", *FAST_TRAIN)
    assert "damaged" in caplog.text and again["adapter_sha256"] == first["adapter_sha256"]


# --------------------------------------------------------------------------------------------------
# 11. a process waiting on a lock says so and reuses the result finished meanwhile


def test_lock_wait_reuses_the_finished_result(cfgs, evaluate, caplog):
    from value_harms.core.profiles import profile_from_cfg
    from value_harms.eval.job import load_benchmark, prepare_job
    from value_harms.eval.task import run_evaluate
    from value_harms.store import files

    args = ["value_profile=vanilla", *RTP, "scorer=profanity_check"]
    cfg = cfgs("evaluate", *args)
    prompts, fp = load_benchmark(cfg)
    store = prepare_job(cfg, profile_from_cfg(cfg.value_profile), "vanilla", prompts, fp).store
    out: dict = {}
    with files.locked(store):
        worker = threading.Thread(target=lambda: out.update(res=run_evaluate(cfgs("evaluate", *args))))
        worker.start()
        time.sleep(3.0)
        assert worker.is_alive(), "the second process must wait for the lock"
        done = evaluate(*args, "paths.store_dir=" + str(Path(cfg.paths.store_dir).parent / "other"))
        # finish the result in the locked folder as the lock holder would
        shutil.copytree(Path(done["store_dir"]), store, dirs_exist_ok=True)
    worker.join(timeout=120)
    assert out["res"]["skipped"] is True
    assert "waiting for" in caplog.text


# --------------------------------------------------------------------------------------------------
# 13. status: a job is done when its result is in the store, however it got there


def test_status_counts_a_job_completed_by_a_plain_rerun(tmp_path, cache_dir, data_dir):
    from value_harms.tools.status import sweep_status

    common = _base(tmp_path, cache_dir, data_dir, *FAST_TRAIN, "alignment.enabled=false", "trainer.max_steps=2")
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", ["-m", "value_profile=Pow,Uni", *common, f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    # make Uni look killed mid-run: its store result gone, its run folder still saying "running"
    st = sweep_status(sweep)
    uni = next(j for j in st["jobs"] if "Uni" in j["label"])
    shutil.rmtree(uni["store_dir"])
    status_file = Path(uni["folder"]) / "status.json"
    status_file.write_text(json.dumps({**json.loads(status_file.read_text()), "status": "running"}))
    assert sweep_status(sweep)["killed"] == [uni["index"]]
    # the user reruns the plain command (not the printed rerun): the sweep is now done
    proc = run_script("train.py", ["value_profile=Uni", *common])
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = sweep_status(sweep)
    assert after["all_done"] and after["killed"] == []


# --------------------------------------------------------------------------------------------------
# analysis: old schemas, partial results and different trainings are not pooled silently


def _res(profile: str, train_key: str | None, *, status="complete", missing=0, schema=2, value=0.5) -> dict:
    return {
        "schema_version": schema,
        "status": status,
        "train_key": train_key,
        "benchmark": {"name": "beavertails", "version": "1", "measure": "flag", "n_prompts": 10},
        "model": {"name": "tiny"},
        "baseline": "vim",
        "stage": "full",
        "profile": {"name": profile, "kind": "extreme", "values": {"power": 6.0}},
        "mitigation": {"name": "none"},
        "scorer": {"measure": "flag", "by_scorer": {"judge": 10 - missing}, "missing": missing, "n": 10},
        "metrics": {"overall": {"flagged_rate": value, "n": 10 - missing, "missing": missing}},
    }


def _write(root: Path, name: str, data: dict) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps(data))


def test_analysis_ignores_old_schema_and_partial_results(tmp_path, caplog):
    from value_harms.analysis.tidy import load_results

    _write(tmp_path, "a", _res("Pow", "k1"))
    _write(tmp_path, "old", _res("Uni", None, schema=1))
    _write(tmp_path, "part", _res("Ach", "k3", status="partial", missing=2))
    df = load_results([str(tmp_path)])
    assert set(df["profile"]) == {"Pow"}
    assert "older store schema" in caplog.text and "analysis.max_missing_frac" in caplog.text
    df = load_results([str(tmp_path)], max_missing_frac=0.2)
    assert set(df["profile"]) == {"Pow", "Ach"}


def test_analysis_refuses_to_pool_two_trainings_of_one_profile(tmp_path):
    from value_harms.analysis.tidy import check_training_keys, load_results
    from value_harms.errors import AnalysisError

    _write(tmp_path, "a", _res("Pow", "k1"))
    _write(tmp_path, "b", _res("Pow", "k2", value=0.9))
    df = load_results([str(tmp_path)])
    with pytest.raises(AnalysisError, match="2 different trainings"):
        check_training_keys(df)
    assert len(check_training_keys(df, allow_mixed=True)) == 1


def test_adapter_identity_does_not_depend_on_the_base_models_cache_folder(tmp_path):
    from value_harms.models.lora import adapter_sha256

    for name, base in (("a", "/cache/one/models/tiny-x"), ("b", "/other/cache/models/tiny-x")):
        d = tmp_path / name
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": base}))
        (d / "adapter_model.safetensors").write_bytes(b"weights")
    assert adapter_sha256(tmp_path / "a") == adapter_sha256(tmp_path / "b")
    (tmp_path / "b" / "adapter_config.json").write_text(json.dumps({"r": 4, "base_model_name_or_path": "x"}))
    assert adapter_sha256(tmp_path / "a") != adapter_sha256(tmp_path / "b")


def test_one_content_hash_keeps_the_persisted_keys(tmp_path):
    """store.identity is the one content hash; the keys that used the retired `files.fingerprint` /
    `file_fingerprint` / `loading._short_hash` keep their exact values (no store or cache is orphaned)."""
    import hashlib

    from value_harms.models import loading
    from value_harms.store import files, identity

    items = tmp_path / "items.csv"
    items.write_bytes("id,text\n1,ünïcode item\n".encode())
    old_file_fp = hashlib.sha256(items.read_bytes()).hexdigest()[:16]  # file_fingerprint of one file
    assert identity.content_id(items) == old_file_fp == identity.content_sha256(items)[:16]
    payload = {"items": old_file_fp, "bs": 8, "new": 32}  # the PVQ alignment cache key
    old_fp = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert identity.digest(payload, 12) == old_fp
    tiny = loading.tiny_dict({})  # the built tiny model's folder name
    obj = {"tiny": tiny, "v": loading.TINY_BUILDER_VERSION, "corpus": list(loading.TINY_CORPUS)}
    old_short = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]
    assert Path(loading.resolve_model_dir({"source": "tiny", "name": "tiny"}, tmp_path)).name == f"tiny-{old_short}"
    assert not hasattr(files, "fingerprint") and not hasattr(files, "file_fingerprint")


def test_in_place_edit_with_size_and_mtime_restored_gets_a_new_hash(tmp_path):
    """The content-hash cache (memory and persisted) is keyed on what an edit or a copy changes: an in-place
    edit that restores the file's size and mtime, and a copy that keeps them, are both hashed again."""
    import hashlib
    import os

    from value_harms.store import identity

    f = tmp_path / "items.csv"
    f.write_bytes(b"id,text\n1,first\n")
    st = f.stat()
    assert identity.content_sha256(f, cache_dir=tmp_path / "c") == hashlib.sha256(f.read_bytes()).hexdigest()
    with open(f, "r+b") as fh:  # same size, other bytes, in place (same inode)
        fh.seek(10)
        fh.write(b"X")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert identity.content_sha256(f, cache_dir=tmp_path / "c") == want
    identity._HASHES.clear()  # a new process: only the persisted cache remains
    assert identity.content_sha256(f, cache_dir=tmp_path / "c") == want
    g = tmp_path / "copy"
    g.mkdir()
    shutil.copy2(f, g / "items.csv")  # a copy keeps size and mtime, not the inode
    (g / "items.csv").write_bytes(b"id,text\n1,fXrst\n".replace(b"X", b"Y"))
    os.utime(g / "items.csv", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert identity.content_sha256(g / "items.csv") == hashlib.sha256((g / "items.csv").read_bytes()).hexdigest()
