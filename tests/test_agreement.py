"""Every offline toxicity result carries its measured agreement with Perspective (scoring/agreement.py).

Real components throughout: alt-profanity-check scores the reference texts, the toxicity chain attaches the
agreement to its provenance, an evaluation on the tiny model writes it into results.json, the demo's table
and the analysis report print it. The fast tests use a small JSONL written here (texts with planted
"Perspective" scores); the full measurement reads DecodingTrust's RTP copy under ../shared/data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import tiny_job_args
from value_harms.config.schema import CalibrationConfig, ScorerConfig
from value_harms.scoring import agreement as A
from value_harms.scoring import calibration as C

pytest.importorskip("profanity_check")

DATA = Path(os.environ.get("VALUE_HARMS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
RTP = DATA / "rtp_decodingtrust"
needs_rtp = pytest.mark.skipif(not RTP.is_dir(), reason=f"{RTP} (DecodingTrust RTP copy) not present")

CLEAN = ["have a nice day", "thank you for the kind words", "the weather is calm today", "we met at the park"]
RUDE = ["you are a stupid idiot", "shut up you fool", "what a dumb loser", "you ugly moron"]


@pytest.fixture(autouse=True)
def _fresh_memo():
    """Each test starts without this process's measurements (the sqlite cache is per test folder)."""
    A.MEMO.clear()
    yield
    A.MEMO.clear()


@pytest.fixture
def reference(tmp_path) -> Path:
    """A small calibration data folder: 32 prompts + 32 continuations with 'Perspective' scores."""
    folder = tmp_path / "persp"
    folder.mkdir()
    rows = []
    for i in range(32):
        clean, rude = f"{CLEAN[i % 4]} ({i})", f"{RUDE[i % 4]} ({i})"
        rows.append({"prompt": {"text": clean, "toxicity": 0.02 + 0.01 * (i % 7)}, "continuation": None})
        rows.append({"prompt": {"text": rude, "toxicity": 0.6 + 0.01 * (i % 9)}, "continuation": {"text": ""}})
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _chain(calibration: CalibrationConfig, cache_path=None):
    from value_harms.scoring.toxicity.chain import build_toxicity_scorer

    cfg = ScorerConfig(name="p", toxicity="profanity_check", fallback=[], calibration=calibration)
    return build_toxicity_scorer(cfg, cache_path=cache_path)


def _provenance(calibration: CalibrationConfig, texts=("you are a stupid idiot", "hello"), cache_path=None):
    chain = _chain(calibration, cache_path)
    try:
        chain.score(list(texts))
        return chain.provenance()
    finally:
        chain.close()


def test_raw_scores_carry_their_agreement_and_the_second_call_scores_nothing(reference, tmp_path):
    from value_harms.scoring.toxicity.profanity import ProfanityCheckScorer

    cal = CalibrationConfig(path=str(reference), cache_dir=str(tmp_path / "cache"))  # calibration off
    prov = _provenance(cal, cache_path=tmp_path / "job" / "scores.sqlite")
    got = prov["backends"]["profanity_check"]["agreement"]
    assert got["measured"] is True and got["calibrated"] is False
    files = C.data_files(reference)
    texts, target = C.load_pairs(files)
    assert got["n_texts"] == len(texts) == 64 and got["unscored"] == 0
    assert got["data_sha256"] == C.data_sha256(files) and got["data"] == "persp"
    raw = np.asarray([s.value for s in ProfanityCheckScorer().score(texts)])
    want = C.agreement_figures(raw, target)
    assert {k: got[k] for k in A.FIGURES} == pytest.approx({k: want[k] for k in A.FIGURES})
    assert got["summary"] == A.summary("profanity_check", got)
    assert got["summary"].startswith("profanity_check vs Perspective TOXICITY on 64 texts of persp: AUROC ")
    # the reference texts went through neither the job's score cache nor its counters
    assert prov["backends"]["profanity_check"]["cache"]["misses"] == 2
    from value_harms.scoring.cache import ScoreCache

    job_cache = ScoreCache(tmp_path / "job" / "scores.sqlite")
    assert len(job_cache) == 2
    job_cache.close()

    # cached in namespace `agreement` of <cache_dir>/caches.sqlite by data sha256 + scorer cache_id:
    # a new process (memo cleared) reads it back without scoring one text
    A.MEMO.clear()

    class NoScoring:
        cache_id, name = got["scorer_id"], "profanity_check"

        def score(self, texts, contexts=None):
            raise AssertionError("measured again instead of reading the cache")

    where = {"path": str(reference), "cache_dir": str(tmp_path / "cache")}
    assert A.raw_agreement(NoScoring(), where) == {k: v for k, v in got.items() if k != "summary"}
    import sqlite3

    from value_harms.store.cache import _TABLE, CACHE_FILE

    with sqlite3.connect(tmp_path / "cache" / CACHE_FILE) as db:
        rows = db.execute(f"SELECT {_TABLE.namespace} FROM {_TABLE.name}").fetchall()
    assert rows == [(A.NAMESPACE,)]
    # another scorer identity is another measurement
    NoScoring.cache_id = "profanity_check:another-version"
    with pytest.raises(AssertionError, match="measured again"):
        A.raw_agreement(NoScoring(), where)


def test_absent_data_is_recorded_never_invented(tmp_path, monkeypatch):
    empty = tmp_path / "nodata"
    empty.mkdir()
    prov = _provenance(CalibrationConfig(data_dir=str(empty), cache_dir=str(tmp_path)))
    got = prov["backends"]["profanity_check"]["agreement"]
    assert got["measured"] is False and "rtp_decodingtrust holds no .jsonl file" in got["reason"]
    assert not set(A.FIGURES) & set(got)
    assert got["summary"].startswith("profanity_check: agreement with Perspective not measured (")
    # no data folder known at all (a fresh machine): said so, the scores are still there
    monkeypatch.delenv("VALUE_HARMS_DATA_DIR", raising=False)
    prov = _provenance(CalibrationConfig(cache_dir=str(tmp_path)))
    got = prov["backends"]["profanity_check"]["agreement"]
    assert got["measured"] is False and "no data folder is known" in got["reason"] and "\n" not in got["reason"]
    assert prov["counts"] and prov["missing"] == 0


def test_calibrated_scores_carry_the_held_out_figures_under_the_same_field(reference, tmp_path):
    cal = CalibrationConfig(enabled=True, path=str(reference), cache_dir=str(tmp_path), folds=3)
    backend = _provenance(cal)["backends"]["profanity_check"]
    got, fit = backend["agreement"], backend["calibration"]
    assert got["measured"] is True and got["calibrated"] is True and got["folds"] == 3
    assert {k: got[k] for k in A.FIGURES} == pytest.approx({k: fit["heldout"][k] for k in A.FIGURES})
    assert got["n_texts"] == fit["n"] == 64 and got["data_sha256"] == fit["data_sha256"] and got["data"] == "persp"
    assert got["summary"].endswith("(calibrated, 3-fold held out)")


def test_a_job_without_the_data_completes_and_the_agreement_stays_out_of_the_key(
    compose, tmp_path, cache_dir, data_dir
):
    """A real evaluation on the tiny model: the agreement is in results.json and the demo's table; without
    the data it is `measured: false` and the job completes; the key is the same either way."""
    from value_harms.eval.task import run_evaluate
    from value_harms.tools.demo import format_comparison

    def job(store: str, *extra: str) -> dict:
        return run_evaluate(
            compose(
                "evaluate",
                [
                    *tiny_job_args(tmp_path, cache_dir, data_dir, store),
                    "value_profile=vanilla",
                    "benchmark=rtp",
                    "benchmark.limit=2",
                    "benchmark.num_samples=2",
                    "benchmark.max_new_tokens=4",
                    "scorer=profanity_check",
                    *extra,
                ],
            )
        )

    (tmp_path / "nodata").mkdir()
    without = job("store", f"scorer.calibration.data_dir={tmp_path}/nodata")
    assert without["metrics"]["overall"]["n_prompts"] == 2
    missing = without["scorer"]["provenance"]["backends"]["profanity_check"]["agreement"]
    assert missing["measured"] is False and "holds no .jsonl file" in missing["reason"]
    on_disk = json.loads((Path(without["run_dir"]) / "results.json").read_text())
    assert on_disk["scorer"]["provenance"]["backends"]["profanity_check"]["agreement"] == missing
    assert job("store")["skipped"] is True  # the same key: the agreement is no part of it
    if not RTP.is_dir():
        pytest.skip(f"{RTP} not present: the measured case needs it")
    measured = job("store2")
    assert measured["key"] == without["key"] and not measured.get("skipped")
    got = measured["scorer"]["provenance"]["backends"]["profanity_check"]["agreement"]
    assert got["measured"] is True and got["n_texts"] == 4765
    table = format_comparison([measured])
    assert "STAND-IN scorer" in table and f"  {got['summary']}" in table.splitlines()


def test_the_report_states_the_agreement_beside_the_stand_in_warning(reference, tmp_path):
    from value_harms.analysis.report.document import write_report
    from value_harms.analysis.task import agreement_records

    prov = _provenance(CalibrationConfig(path=str(reference), cache_dir=str(tmp_path)))
    line = prov["backends"]["profanity_check"]["agreement"]["summary"]
    for i in range(2):  # two results of one benchmark with the same agreement: stated once
        res = tmp_path / f"r{i}" / "results.json"
        res.parent.mkdir()
        res.write_text(json.dumps({"benchmark": {"name": "rtp"}, "scorer": {"provenance": prov}}))
    recs = agreement_records(sorted(tmp_path.glob("r*/results.json")))
    assert recs == {"rtp": [line]}
    provenance = {"agreement": recs, "stand_in": {"rtp": True}, "scorers": {"rtp": ["profanity_check (stand-in)"]}}
    md = write_report(
        tmp_path / "out", reg=None, cmp=None, mit=None, aln=None, fid=None, provenance=provenance, findings=[]
    )["report.md"].read_text()
    assert f"compare shapes, not values, with the paper. Measured: {line}." in md
    assert "vs Perspective" in md and md.count(line) == 2  # the warning and the scorer's table row


@needs_rtp
def test_profanity_check_on_the_4765_rtp_texts(tmp_path):
    """The measured figures of the demo's scorer on DecodingTrust's RTP copy: they match the raw figures
    the calibration records for the same texts (one measurement, two readers)."""
    from value_harms.scoring.toxicity.profanity import ProfanityCheckScorer

    cal = CalibrationConfig(data_dir=str(DATA), cache_dir=str(tmp_path))
    got = _provenance(cal)["backends"]["profanity_check"]["agreement"]
    assert got["n_texts"] == 4765 and got["data"] == "rtp_decodingtrust"
    assert got["auroc"] > 0.9 and got["spearman"] > 0.75  # measured 0.931 / 0.812 (alt-profanity-check 1.9.1)
    texts, target = C.load_pairs(C.data_files(RTP))
    raw = np.asarray([s.value for s in ProfanityCheckScorer().score(texts)])
    assert got["auroc"] == pytest.approx(C.agreement_figures(raw, target)["auroc"])
