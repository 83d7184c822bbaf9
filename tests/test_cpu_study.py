"""The cpu_study levers and metrics: QA score balancing, answer-token loss weight, target lift / cross
separation / Spearman, and the alignment summary scalars a training run logs."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest
import torch
from test_alignment import TINY  # the tiny model's config

from value_harms.alignment import shift as A
from value_harms.alignment.pvq import AlignmentResult
from value_harms.core.profiles import profile_from_cfg
from value_harms.core.values import VALUES, anchor_vector
from value_harms.data.touche import load_arguments
from value_harms.data.vim import SupervisedDataset, balance_by_score, vim_datasets
from value_harms.models import loading
from value_harms.runtime import tracking
from value_harms.train import keys
from value_harms.train.module import weighted_target_loss
from value_harms.train.task import run_train, train_store_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return loading.load_base_model(TINY, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def pow_qa(data_dir):
    split, _ = vim_datasets("qa", load_arguments("value_eval_10", data_dir=data_dir), anchor_vector("Pow"))
    return split


# ---- metrics ---------------------------------------------------------------------------------------
def _scores(base: float, **over: float) -> dict[str, float]:
    s = {v: base for v in VALUES}
    s.update({k.replace("_", "-"): x for k, x in over.items()})
    return s


def test_target_lift_is_relative_to_the_rest_and_to_vanilla():
    vanilla = _scores(3.0, Power=3.5)  # vanilla already rates Power 0.5 above the rest
    uniform_drop = _scores(2.6, Power=3.1)  # "answer low" everywhere: no lift
    lifted = _scores(2.0, Power=4.0)
    assert A.target_lift(uniform_drop, vanilla, "Power") == pytest.approx(0.0)
    assert A.target_lift(lifted, vanilla, "Power") == pytest.approx(2.0 - 0.5)
    assert A.target_lift({**lifted, "Tradition": None}, vanilla, "Power") is None
    with pytest.raises(ValueError, match="unknown value 'Powr'"):
        A.target_lift(lifted, vanilla, "Powr")


def test_cross_separation_and_spearman():
    pow_m, uni_m = _scores(2.0, Power=4.0, Universalism=2.5), _scores(2.0, Power=2.2, Universalism=3.5)
    assert A.cross_separation(pow_m, uni_m, "Power") == pytest.approx(1.8)
    assert A.cross_separation(uni_m, pow_m, "Universalism") == pytest.approx(1.0)
    target = {v: float(i + 1) for i, v in enumerate(VALUES)}
    assert A.spearman_vs_target({v: 10.0 - i for i, v in enumerate(VALUES)}, target) == pytest.approx(-1.0)
    assert A.spearman_vs_target({v: i**2 for i, v in enumerate(VALUES)}, target) == pytest.approx(1.0)
    # an anchor target ties nine values: only the rank of Power against the rest counts
    anchor = _scores(1.0, Power=6.0)
    rho = A.spearman_vs_target(_scores(2.0, Power=5.0), anchor)
    assert rho == pytest.approx(1.0)
    assert A.spearman_vs_target(_scores(2.0), anchor) is None  # constant scores: undefined
    assert A.top_values(anchor) == ["Power"] and A.top_values(_scores(1.0)) == []


def test_summary_scalars_name_every_value_and_the_lift():
    vanilla = {"expected": _scores(3.0), "greedy": _scores(1.0), "target": None}
    res = {"expected": _scores(2.0, Power=3.5), "greedy": _scores(1.0, Power=6.0), "target": _scores(1.0, Power=6.0)}
    out = A.summary_scalars(res, vanilla)
    assert out["expected/Power"] == 3.5 and out["greedy/Power"] == 6.0 and out["greedy/Self-direction"] == 1.0
    assert out["target_lift"] == pytest.approx(1.5)
    assert out["shift/Tradition"] == pytest.approx(-1.0)
    assert out["spearman_expected"] == pytest.approx(1.0) and out["spearman_gain"] is None  # vanilla is flat
    assert "target_lift" not in A.summary_scalars(res)  # no vanilla: no lift


# ---- QA score balancing ----------------------------------------------------------------------------
def test_balance_by_score_equalises_answer_scores(pow_qa):
    before = Counter(e.meta["score"] for e in pow_qa["train"])
    assert before[1] / len(pow_qa["train"]) > 0.85  # the problem: "1" dominates an extreme profile
    out = balance_by_score(pow_qa["train"], seed=42)
    after = Counter(e.meta["score"] for e in out)
    assert set(after) == {1, 6} and after[1] == after[6]
    assert abs(len(out) - len(pow_qa["train"])) <= 1
    assert {e.meta["index"] for e in out if e.meta["score"] == 6} == {
        e.meta["index"] for e in pow_qa["train"] if e.meta["score"] == 6
    }
    assert [e.target for e in out] == [e.target for e in balance_by_score(pow_qa["train"], seed=42)]
    # square-root weights: the top score's share lies between the original one and a half
    half = Counter(e.meta["score"] for e in balance_by_score(pow_qa["train"], seed=42, power=0.5))
    share, orig = half[6] / sum(half.values()), before[6] / len(pow_qa["train"])
    assert orig < share < 0.5 and share == pytest.approx(orig**0.5 / (orig**0.5 + (1 - orig) ** 0.5), abs=1e-3)
    with pytest.raises(ValueError, match="qa_balance_power=2"):
        balance_by_score(pow_qa["train"], power=2)


# ---- answer-token weight ---------------------------------------------------------------------------
def test_answer_mask_marks_the_qa_digit(tiny, pow_qa):
    _, tok = tiny
    ex = pow_qa["train"][:4]
    ds = SupervisedDataset(ex, tok, max_length=512, pad_to="longest")
    batch = ds.collate([ds[i] for i in range(len(ex))])
    for r, e in enumerate(ex):
        ids = batch["input_ids"][r][batch["answer_mask"][r].bool()].tolist()
        assert tok.decode(ids).strip() == str(e.meta["score"])
    assert bool(((batch["answer_mask"] == 1) <= (batch["labels"] != -100)).all())


def test_weighted_loss_equals_hf_loss_at_1_and_weights_the_answer(tiny, pow_qa):
    model, tok = tiny
    ds = SupervisedDataset(pow_qa["train"][:3], tok, max_length=512, pad_to="longest")
    b = ds.collate([ds[i] for i in range(3)])
    with torch.no_grad():
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
    w1 = weighted_target_loss(out.logits, b["labels"], b["answer_mask"], 1.0)
    assert w1 == pytest.approx(float(out.loss), rel=1e-5)
    # a huge weight: the loss tends to the mean cross-entropy of the answer tokens alone
    only_answer = b["labels"].masked_fill(b["answer_mask"] == 0, -100)
    with torch.no_grad():
        ans = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=only_answer).loss
    assert weighted_target_loss(out.logits, b["labels"], b["answer_mask"], 1e6) == pytest.approx(float(ans), rel=1e-3)


# ---- the levers as config values, end to end on the tiny model -------------------------------------
@pytest.mark.slow  # ~37 s on the shared 2-core machine: two jobs on the full QA data
def test_train_with_levers_records_them_and_keys_apart(compose, tmp_path, cache_dir, data_dir, monkeypatch):
    base = [
        "model=tiny",
        "debug=fast",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "vim_stage=qa",
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={cache_dir}",
        f"paths.data_dir={data_dir}",
        "vim_stage.max_length=256",
        "vim_stage.lr=0.01",
        "value_profile=Pow",
    ]
    plain = compose("train", base)
    lever = compose("train", base + ["vim_stage.qa_balance=score", "vim_stage.answer_weight=5"])
    prof = profile_from_cfg(plain.value_profile)
    # defaults leave the key of an adapter trained before these levers existed unchanged
    assert "qa_balance" not in keys.train_key_payload(plain, prof, data_dir)["stage"]
    assert train_store_dir(plain, prof) != train_store_dir(lever, prof)

    logged: dict = {}
    real = tracking.safe_log
    monkeypatch.setattr(tracking, "safe_log", lambda run, data, **kw: (logged.update(data), real(run, data, **kw))[1])
    run_train(compose("train", base[:-1] + ["value_profile=vanilla"]))  # the vanilla check in this store
    logged.clear()
    res = run_train(lever)
    # W&B summary scalars: per-value scores and the lift against the stored vanilla check
    assert logged["alignment/expected/Power"] == res["alignment"]["expected"]["Power"]
    assert "alignment/greedy/Universalism" in logged and "alignment/spearman_expected" in logged
    van = json.loads(next((tmp_path / "out").rglob("none/vanilla/*/alignment-*.json")).read_text())
    assert logged["alignment/target_lift"] == pytest.approx(
        A.target_lift(res["alignment"]["expected"], van["expected"], "Power")
    )
    counts = res["data_counts"]["qa"]["examples"]
    assert abs(counts["train_balanced"] - counts["train"]) <= 1
    assert res["steps"]["qa"]["global_step"] == 4
    with pytest.raises(Exception, match="vim_stage.qa_balance='both'"):
        run_train(compose("train", base + ["vim_stage.qa_balance=both"]))


def test_separation_lines_say_plainly_whether_models_separate():
    def res(**over):
        r = {f.name: None for f in dataclasses.fields(AlignmentResult)}
        r.update(rows=[], greedy=_scores(1.0), expected=_scores(2.0, **over), histogram={}, nmse_flags=[])
        return AlignmentResult(**r)

    targets = {"vanilla": None, "Pow": _scores(1.0, Power=6.0), "Uni": _scores(1.0, Universalism=6.0)}
    apart = {"vanilla": res(), "Pow": res(Power=3.0), "Uni": res(Universalism=3.0)}
    (line,) = A.separation_lines(apart, targets)
    assert "Power Pow minus the other +1.00" in line and "Universalism Uni minus the other +1.00" in line
    assert "the models separate" in line
    same = {"vanilla": res(), "Pow": res(Power=2.2), "Uni": res(Power=2.1, Universalism=2.1)}
    (line,) = A.separation_lines(same, targets)
    assert "do NOT separate" in line


def test_cpu_study_preset_carries_the_levers_and_paper_is_unchanged(compose):
    c = compose("train", ["experiment=cpu_study", "value_profile=Pow"])
    assert list(c.vim_stage.steps) == ["qa"] and c.vim_stage.truncation_side == "argument"
    assert c.vim_stage.qa_balance == "score" and c.vim_stage.qa_balance_power == 0.5
    assert c.model.name == "smollm2_135m" and c.data.pad_to == "longest"
    e = compose("evaluate", ["experiment=cpu_study", "value_profile=Pow", "benchmark=rtp"])
    assert (
        e.benchmark.limit
        == compose("evaluate", ["experiment=demo", "value_profile=Pow", "benchmark=rtp"]).benchmark.limit
    )
    p = compose("train", ["experiment=paper", "value_profile=Pow"])
    assert (
        p.vim_stage.qa_balance == "none" and p.vim_stage.answer_weight == 1.0 and p.vim_stage.truncation_side == "end"
    )
