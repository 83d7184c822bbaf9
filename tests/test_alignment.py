"""alignment.py: answer parsing, expected score, NMSE, the check on the tiny model, the table."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest
import torch

from value_harms.alignment import pvq as A
from value_harms.alignment.table import format_alignment_table
from value_harms.core.values import VALUES, anchor_vector
from value_harms.models import loading

TINY = dict(
    name="tiny",
    source="tiny",
    dtype="float32",
    padding_side="left",
    trust_remote_code=False,
    tiny=dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, vocab_size=512, seed=0),
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return loading.load_base_model(TINY, tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize(
    "text, want",
    [
        ("Because I think power is very important to me, my answer is 6.", 6),
        (" 3. 'A little like me'", 3),
        ("My answer: 10 or 4", 4),  # a digit inside a longer number is not an answer
        ("Very much like me.", 6),
        ("very much like me", 6),
        ("Like me", 5),
        ("It is NOT LIKE ME AT ALL", 1),
        ("not like me", 2),
        ("a little like me, honestly", 3),
        ("this is somewhat important to me", 4),
        ("I like meat", None),
        ("", None),
        ("no idea 7 8 9 0", None),
    ],
)
def test_parse_answer(text, want):
    assert A.parse_answer(text) == want


def test_expected_from_logits_hand_made():
    probs = torch.zeros(12)
    probs[[1, 7]] = 0.1  # two spellings of "1", summed
    probs[3] = 0.2
    probs[6] = 0.4
    probs[[0, 8, 9, 10]] = 0.05  # non-digit mass 0.2
    digit_ids = {1: [1, 7], 2: [2], 3: [3], 4: [4], 5: [5], 6: [6]}
    exp, mass, pk = A.expected_from_logits(torch.log(probs) + 3.0, digit_ids)  # shift: softmax-invariant
    assert mass == pytest.approx(0.8, abs=1e-6)
    assert pk == pytest.approx([0.25, 0, 0.25, 0, 0, 0.5], abs=1e-6)
    assert exp == pytest.approx(1 * 0.25 + 3 * 0.25 + 6 * 0.5, abs=1e-6)


def test_nmse_hand_computed():
    ones = {v: 1.0 for v in VALUES}
    assert A.nmse(ones, ones) == 0.0
    assert A.nmse(dict(ones, Power=6.0), ones) == pytest.approx(1.0 / 10)
    assert A.nmse(dict(ones, Achievement=3.5), {k.lower().replace("-", "_"): 1.0 for k in VALUES}) == pytest.approx(
        (2.5 / 5) ** 2 / 10
    )
    pred = dict(zip(VALUES, anchor_vector("Pow")))
    assert A.nmse(pred, dict(zip(VALUES, anchor_vector("Ach")))) == pytest.approx(2 / 10)
    with pytest.raises(ValueError):
        A.nmse({"Power": 2.0}, {"Tradition": 3.0})
    with pytest.raises(ValueError, match="unknown value"):
        A.nmse({"Powr": 2.0}, ones)


def test_load_items(tmp_path):
    df = A.load_items(A.DEMO_ITEMS_PATH)
    assert list(df.columns) == ["item", "value", "text"] and len(df) == 20
    assert df["value"].value_counts().to_dict() == {v: 2 for v in VALUES}
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"item": [1], "value": ["Power"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="missing column"):
        A.load_items(bad)
    pd.DataFrame({"item": [1], "value": ["Greed"], "text": ["x"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="unknown value name"):
        A.load_items(bad)


def test_digit_token_ids_tiny(tiny):
    _, tok = tiny
    ids = A.digit_token_ids(tok)
    for k in range(1, 7):
        assert len(ids[k]) == 2  # "k" and " k" are single tokens in the tiny vocabulary
        assert {tok.decode([i]).strip() for i in ids[k]} == {str(k)}


def test_run_alignment_check_tiny(tiny):
    model, tok = tiny
    items = A.load_items()
    target = dict(zip(VALUES, anchor_vector("Pow")))
    res = A.run_alignment_check(model, tok, items, target, batch_size=8, max_new_tokens=8)
    assert res.n_items == len(res.rows) == 20
    assert 0.0 <= res.parse_rate <= 1.0
    assert sum(res.histogram.values()) == 20
    assert all(1.0 <= r["expected"] <= 6.0 and 0.0 <= r["digit_mass"] <= 1.0 + 1e-6 for r in res.rows)
    assert all(r["answer"] is None or 1 <= r["answer"] <= 6 for r in res.rows)
    assert set(res.expected) == set(VALUES) and all(v is not None for v in res.expected.values())
    assert res.nmse_expected is not None and 0.0 <= res.nmse_expected <= 1.0
    assert tok.padding_side == "left"
    json.dumps(res.to_dict())
    # left padding + attention mask: batching does not change the answers
    one = A.run_alignment_check(model, tok, items.head(4), None, batch_size=1, max_new_tokens=8)
    assert one.nmse_greedy is None and one.nmse_expected is None
    for a, b in zip(one.rows, res.rows[:4]):
        assert a["text"] == b["text"]
        assert a["expected"] == pytest.approx(b["expected"], abs=1e-4)


def _fake(answer: int | None, expected: float, target=None) -> A.AlignmentResult:
    rows = [
        {
            "item": i,
            "value": VALUES[i % 10],
            "text": str(answer),
            "answer": answer,
            "answer_from": "digit",
            "answer_step": 0,
            "expected": expected,
            "digit_mass": 0.9,
            "p": [0] * 6,
        }
        for i in range(20)
    ]
    greedy = {v: None if answer is None else float(answer) for v in VALUES}
    exp = {v: expected for v in VALUES}
    hist = {str(k): (20 if k == answer else 0) for k in range(1, 7)}
    hist["unparsed"] = 0 if answer else 20
    return A.AlignmentResult(
        rows=rows,
        greedy=greedy,
        expected=exp,
        target=target,
        nmse_greedy=A.nmse(greedy, target) if target and answer else None,
        nmse_expected=A.nmse(exp, target) if target else None,
        greedy_values_covered=10 if answer else 0,
        parse_rate=1.0 if answer else 0.0,
        histogram=hist,
        collapsed=answer is not None,
        collapsed_to=answer,
        mean_digit_mass=0.9,
        n_items=20,
    )


def test_format_alignment_table_collapse_sentence():
    pow_t = dict(zip(VALUES, anchor_vector("Pow")))
    results = {"vanilla": _fake(None, 3.0), "Pow": _fake(3, 3.5, pow_t)}
    table = format_alignment_table(results, {"vanilla": None, "Pow": pow_t})
    lines = table.splitlines()
    for v in VALUES:
        assert any(line.startswith(v) for line in lines)
    assert any(line.startswith("NMSE(greedy)") for line in lines)
    assert any(line.startswith("NMSE(expected)") for line in lines)
    assert any(line.startswith("parse rate") for line in lines)
    assert "Pow: " in table and "greedy answers collapsed to '3' for every parsed item" in table
    assert "NMSE is not evidence of alignment" in table
    assert "moved by a mean of 0.50 points relative to vanilla" in table
    assert "vanilla: no greedy answer could be parsed" in table
    want = A.nmse({v: 3.0 for v in VALUES}, pow_t)
    assert f"vanilla NMSE(greedy) -, NMSE(expected) {want:.3f}" in table
    assert not math.isnan(want)
    # results without a vanilla run: no movement sentence, still one line per run
    solo = format_alignment_table({"Pow": dataclasses.replace(results["Pow"])}, {"Pow": pow_t})
    assert "relative to vanilla" not in solo and "collapsed to '3'" in solo
