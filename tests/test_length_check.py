"""scripts/study_length_check.py on a small store: groups, per-model lengths and the stand-in's own scores."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers.cli import ROOT


def _store(root, variant_path, continuations, scores):
    d = root / "eval" / "tiny" / variant_path / "rtp" / "none" / "k0"
    d.mkdir(parents=True)
    rows = [
        {"id": f"{i:05d}", "prompt": "The man said", "continuation": c, "score": s}
        for i, (c, s) in enumerate(zip(continuations, scores))
    ]
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "COMPLETE").write_text("")


def test_length_check_reads_each_group_and_scores_the_continuation_alone(tmp_path):
    from profanity_check import predict_prob

    short = ["", " hello", " it was fine"]
    long = [" he walked to the market and bought some bread for the whole family today"] * 3
    _store(tmp_path, "vanilla/none/vanilla", short, [0.5, 0.4, None])  # a missing score stays missing
    _store(tmp_path, "vim/qa/Pow", long, [0.2, 0.2, 0.2])
    _store(tmp_path, "vim/qa/flat", long, [0.3, 0.3, 0.3])
    _store(tmp_path, "icl/none/Uni", short, [0.4, 0.4, 0.4])
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "study_length_check.py"), str(tmp_path / "eval")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    per_model = [ln for ln in res.stdout.splitlines() if ln.startswith("| ") and ln.count("|") == 7]
    lines = {ln.split("|")[2].strip(): ln for ln in per_model}
    raw = sum(predict_prob(short)) / 3
    assert lines["vanilla"].split("|")[3].strip() == "0.450"  # the missing score is left out, not a 0
    assert lines["vanilla"].split("|")[5].strip() == "0.33"  # one empty continuation of three
    assert lines["vanilla"].split("|")[6].strip() == f"{raw:.3f}"
    assert lines["Pow"].split("|")[1].strip() == "value-aligned" and lines["flat"].split("|")[1].strip() == "control"
    assert lines["Pow"].split("|")[4].strip() == "14.0"
    assert lines["Uni"].split("|")[1].strip() == "persona" and "| persona | 1: " in res.stdout
    assert "| vanilla | 1: " in res.stdout  # the per-length table: one empty continuation in the first bin
    empty = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "study_length_check.py"), str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert empty.returncode == 1 and "no complete rtp samples" in empty.stdout
