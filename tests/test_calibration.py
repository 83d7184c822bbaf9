"""Offline toxicity calibrated to Perspective's scale: isotonic fit with k-fold held-out
figures on DecodingTrust's RTP copy (read from the data folder at run time), cache keyed by the data's
sha256, calibrated + raw scores in the toxicity chain, the scorer identity, and Detoxify (tiny
checkpoint) through the same machinery."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from helpers.tiny_detoxify import WORDS, build_tiny_detoxify
from value_harms.config.schema import CalibrationConfig, DetoxifyConfig, ScorerConfig
from value_harms.scoring import calibration as C
from value_harms.scoring.identity import scorer_identity

DATA = Path(os.environ.get("VALUE_HARMS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
RTP = DATA / "rtp_decodingtrust"
needs_rtp = pytest.mark.skipif(not RTP.is_dir(), reason=f"{RTP} (DecodingTrust RTP copy) not present")


@pytest.fixture(scope="module")
def profanity_calibration(tmp_path_factory):
    pytest.importorskip("profanity_check")
    if not RTP.is_dir():
        pytest.skip(f"{RTP} not present")
    from value_harms.scoring.toxicity.profanity import ProfanityCheckScorer

    cache = tmp_path_factory.mktemp("calcache")
    cfg = CalibrationConfig(enabled=True, data_dir=str(DATA), cache_dir=str(cache))
    return C.load_or_fit(ProfanityCheckScorer(), cfg), cfg, cache


@needs_rtp
def test_profanity_check_calibrated_to_perspective(profanity_calibration):
    cal, cfg, cache = profanity_calibration
    rec = cal.record
    assert rec["data_sha256"] == C.data_sha256(C.data_files(RTP)) and rec["n"] > 4000 and rec["folds"] == 5
    held, raw = rec["heldout"], rec["raw"]
    # raw reads low; calibrated (held out) is on Perspective's scale and errs less, ranking kept
    assert raw["mean"] < rec["target_mean"] - 0.05
    assert abs(held["mean"] - rec["target_mean"]) < 0.02
    assert held["mae"] < raw["mae"] and held["agreement"] > raw["agreement"]
    assert held["spearman"] > 0.75 and held["auroc"] > 0.9
    assert abs(held["flagged"] - rec["target_flagged"]) < abs(raw["flagged"] - rec["target_flagged"])
    # the map is monotone and within [0, 1]
    out = cal(np.linspace(0, 1, 101))
    assert np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() <= 1
    # cached by data sha256 + scorer identity: a second call does not score anything
    from value_harms.store.cache import _TABLE, CACHE_FILE, KVStore

    kv = KVStore(cache / CACHE_FILE, _TABLE)
    assert len(kv) == 1 and not (cache / "calibration").exists()
    kv.close()

    class NoScoring:
        cache_id, name = "profanity_check:" + rec["scorer_id"].split(":", 1)[1], "x"

        def score(self, texts, contexts=None):
            raise AssertionError("refitted instead of reading the cache")

    assert C.load_or_fit(NoScoring(), cfg).record["heldout"] == held


@needs_rtp
def test_chain_scores_are_labelled_calibrated_with_raw_kept(profanity_calibration, tmp_path):
    cal, cfg, cache = profanity_calibration
    from value_harms.scoring.toxicity.chain import build_toxicity_scorer

    sc = ScorerConfig(name="profanity_check", toxicity="profanity_check", fallback=[], cache=False, calibration=cfg)
    chain = build_toxicity_scorer(sc)
    try:
        got = chain.score(["you are a stupid idiot", "have a nice day", "you are a stupid idiot"])
        prov = chain.provenance()
    finally:
        chain.close()
    assert all(s.scorer.endswith("(stand-in) calibrated") for s in got)
    raw = [float(s.raw.split("=", 1)[1]) for s in got]
    assert [s.value for s in got] == pytest.approx(cal(raw).tolist(), abs=1e-5)
    assert got[0].value == got[2].value and got[0].value != pytest.approx(raw[0])
    rec = prov["backends"]["profanity_check"]["calibration"]
    assert rec["data_sha256"] and set(rec["heldout"]) >= {"spearman", "auroc", "mae", "agreement"}
    assert prov["stand_in"] is True  # still a stand-in
    from value_harms.metrics import scorer_shares

    assert scorer_shares({got[0].scorer: 3}, "profanity_check")["fallback_share"] == 0.0


@needs_rtp
def test_scorer_identity_changes_with_calibration():
    off = ScorerConfig(name="p", toxicity="profanity_check", fallback=[])
    on = ScorerConfig(
        name="p",
        toxicity="profanity_check",
        fallback=[],
        calibration=CalibrationConfig(enabled=True, data_dir=str(DATA)),
    )
    other = ScorerConfig(
        name="p",
        toxicity="profanity_check",
        fallback=[],
        calibration=CalibrationConfig(enabled=True, data_dir=str(DATA), folds=10),
    )
    from omegaconf import OmegaConf

    ids = [scorer_identity(OmegaConf.structured(c), "toxicity") for c in (off, on, other)]
    assert "calibration" not in ids[0]  # unchanged identity (and store keys) when off
    assert ids[1]["calibration"]["data_sha256"] == C.data_sha256(C.data_files(RTP))
    assert ids[0] != ids[1] != ids[2]


def test_missing_calibration_data_is_one_line(tmp_path):
    from value_harms.scoring.toxicity.chain import build_toxicity_scorer

    pytest.importorskip("profanity_check")
    sc = ScorerConfig(
        name="p",
        toxicity="profanity_check",
        fallback=[],
        cache=False,
        calibration=CalibrationConfig(enabled=True, data_dir=str(tmp_path), cache_dir=str(tmp_path)),
    )
    with pytest.raises(C.CalibrationError, match=r"rtp_decodingtrust holds no \.jsonl file"):
        build_toxicity_scorer(sc)


def test_detoxify_calibrated_by_the_same_machinery(tmp_path):
    """A tiny random Detoxify checkpoint against planted 'Perspective' scores (a monotone function of its
    own score plus noise): the held-out calibration recovers the target scale."""
    pytest.importorskip("detoxify")
    from value_harms.scoring.toxicity.detoxify import DetoxifyScorer

    ckpt, hf = build_tiny_detoxify(tmp_path / "detox", seed=1)
    det = DetoxifyScorer(DetoxifyConfig(checkpoint=str(ckpt), huggingface_config_path=str(hf)))
    rng = np.random.default_rng(0)
    texts = list(dict.fromkeys(" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(260)))
    raw = np.asarray([s.value for s in det.score(texts)])
    z = (raw - raw.mean()) / raw.std()
    target = np.clip(1 / (1 + np.exp(-2.5 * z)) + rng.normal(0, 0.03, raw.size), 0, 1)
    data = tmp_path / "persp"
    data.mkdir()
    (data / "pairs.jsonl").write_text(
        "".join(json.dumps({"prompt": {"text": t, "toxicity": float(y)}}) + "\n" for t, y in zip(texts, target))
    )
    cfg = CalibrationConfig(enabled=True, path=str(data), cache_dir=str(tmp_path / "cache"))
    cal = C.load_or_fit(det, cfg)
    rec = cal.record
    assert rec["scorer"].startswith("detoxify:") and rec["n"] == len(texts)
    assert rec["heldout"]["spearman"] > 0.9 and rec["heldout"]["mae"] < 0.06 < rec["raw"]["mae"]
    wrapped = C.CalibratedScorer(det, cal)
    got = wrapped.score(texts[:5])
    assert np.allclose([s.value for s in got], cal(raw[:5])) and got[0].raw == f"raw={float(raw[0])!r}"
    assert wrapped.provenance()["calibration"]["heldout"] == rec["heldout"]


@needs_rtp
def test_report_shows_the_calibration_figures(profanity_calibration, tmp_path):
    from value_harms.analysis.report.document import write_report
    from value_harms.analysis.task import calibration_records

    cal, _, _ = profanity_calibration
    res = tmp_path / "r" / "results.json"
    res.parent.mkdir()
    res.write_text(
        json.dumps(
            {
                "benchmark": {"name": "rtp"},
                "scorer": {
                    "provenance": {
                        "backends": {"profanity_check": {"backend": "profanity_check", "calibration": cal.summary()}}
                    }
                },
            }
        )
    )
    recs = calibration_records([res])
    assert recs["rtp"]["profanity_check"]["data_sha256"] == cal.record["data_sha256"]
    md = write_report(
        tmp_path / "out",
        reg=None,
        cmp=None,
        mit=None,
        aln=None,
        fid=None,
        provenance={"calibration": recs},
        findings=[],
    )["report.md"].read_text()
    held = cal.record["heldout"]
    assert "calibrated to Perspective TOXICITY" in md
    assert (
        f"| RealToxicityPrompts | profanity_check | {cal.record['n']} | {cal.record['data_sha256'][:16]} | "
        f"{held['spearman']:.3f} | {held['auroc']:.3f} | {held['mae']:.3f} | {held['agreement']:.3f} |" in md
    )
