"""Tests of value_harms.data: Touché loaders, VIM examples / splits / tokenised dataset, instruction sets.

Counts are the protocol's figures (../shared/docs/PROTOCOL.md "VIM training data"), re-measured on the
reference data directory; tests that need it skip when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from value_harms.core.values import ANCHORS, VALUES, anchor_vector
from value_harms.data import (
    LEVEL2_TO_BASIC,
    Example,
    SupervisedDataset,
    ag_example,
    argument_scores,
    load_arguments,
    load_instruction_examples,
    load_touche_hub,
    load_touche_raw,
    load_value_eval_10,
    qa_example,
    qa_prompt,
    stage1_split,
    stage2_examples,
    value_split,
    vim_datasets,
)
from value_harms.data import touche as touche_mod
from value_harms.errors import DataError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KEY = ["Conclusion", "Stance", "Premise"]


# `data_dir` comes from conftest.py (skips when the reference data is absent).


@pytest.fixture(scope="module")
def args_df(data_dir) -> pd.DataFrame:
    return load_arguments("value_eval_10", data_dir=data_dir)


# ---- Touché loaders --------------------------------------------------------------------------------
def test_value_eval_10_shape(args_df):
    assert len(args_df) == 7374
    assert list(args_df.columns) == KEY + list(VALUES)
    assert set(args_df["Stance"]) == {"in favor of", "against"}
    assert all(str(args_df[v].dtype).startswith("int") for v in VALUES)
    assert args_df.index.is_unique and args_df.index.max() == 7387  # file index kept (it has gaps)


def _write_value_eval(path: Path, columns: list[str], rows: list[list]) -> Path:
    pd.DataFrame(rows, columns=columns).to_csv(path, sep="\t")
    return path


def test_value_eval_10_by_name_and_validation(tmp_path):
    # Columns shuffled and an extra column at the end: selection by name still right.
    cols = ["Premise", "Stance", "Conclusion", *reversed(VALUES), "Extra"]
    row = {
        "Premise": "kites are cheap fun",
        "Stance": "in favor of",
        "Conclusion": "We should fly kites",
        "Extra": 9,
        **{v: int(v == "Hedonism") for v in VALUES},
    }
    p = _write_value_eval(tmp_path / "ok.csv", cols, [[row[c] for c in cols]])
    df = load_value_eval_10(p)
    assert list(df.columns) == KEY + list(VALUES)
    assert df.loc[0, "Hedonism"] == 1 and df.loc[0, VALUES].sum() == 1

    bad = _write_value_eval(tmp_path / "missing.csv", KEY + list(VALUES[:-2]), [["c", "against", "p"] + [0] * 8])
    with pytest.raises(DataError, match="Tradition.*Universalism") as e:
        load_value_eval_10(bad)
    assert "missing.csv" in str(e.value) and "\n" not in str(e.value)

    stance = _write_value_eval(tmp_path / "stance.csv", KEY + list(VALUES), [["c", "neutral", "p"] + [1] * 10])
    with pytest.raises(DataError, match="Stance"):
        load_value_eval_10(stance)

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_value_eval_10(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("\t" + "\t".join(KEY + list(VALUES)) + "\n")
    with pytest.raises(DataError, match="no rows"):
        load_value_eval_10(header_only)


def test_level2_mapping_covers_18_categories(data_dir):
    header = pd.read_csv(data_dir / "touche23" / "labels-training.tsv", sep="\t", nrows=0).columns.tolist()
    cats = [c for cs in LEVEL2_TO_BASIC.values() for c in cs]
    assert len(cats) == len(set(cats)) == 18
    assert set(header) - set(cats) == {"Argument ID", "Face", "Humility"}
    assert tuple(LEVEL2_TO_BASIC) == VALUES


def test_or_mapping_reproduces_value_eval_10(args_df, data_dir):
    # Texts occurring exactly once in both tables; the protocol's figure is 7,050 (all raw arguments).
    for drop, expected in ((False, 7050), (True, 7051)):
        raw = load_touche_raw(data_dir / "touche23", drop_unlabelled=drop)
        ref_once = args_df[~args_df.duplicated(KEY, keep=False)]
        raw_once = raw[~raw.duplicated(KEY, keep=False)]
        j = ref_once.merge(raw_once, on=KEY, suffixes=("_ref", "_raw"))
        assert len(j) == expected
        ref_v = j[[f"{v}_ref" for v in VALUES]].to_numpy()
        raw_v = j[[f"{v}_raw" for v in VALUES]].to_numpy()
        assert (ref_v == raw_v).all()
    assert len(load_touche_raw(data_dir / "touche23", drop_unlabelled=False)) == 8865


def _write_touche(root: Path, labels_name: str = "labels-{split}.tsv", drop_col: str | None = None) -> Path:
    """A tiny invented Touché layout: two arguments per split."""
    cats = [c for cs in LEVEL2_TO_BASIC.values() for c in cs] + ["Face", "Humility"]
    root.mkdir(parents=True, exist_ok=True)
    for k, split in enumerate(("training", "validation", "test")):
        ids = [f"X{k}01", f"X{k}02"]
        pd.DataFrame(
            {
                "Argument ID": ids,
                "Conclusion": [f"We should plant more trees {k}", f"We should ban loud leaf blowers {k}"],
                "Stance": ["in favor of", "against"],
                "Premise": ["trees cool the streets", "gardeners need quick tools"],
            }
        ).to_csv(root / f"arguments-{split}.tsv", sep="\t", index=False)
        lab = pd.DataFrame(0, index=range(2), columns=cats)
        lab.loc[0, "Universalism: nature"] = 1
        lab.loc[0, "Universalism: concern"] = 1
        lab.loc[1, "Power: resources"] = 1
        lab.loc[1, "Face"] = 1
        if k == 2:
            lab.loc[1, :] = 0
            lab.loc[1, "Humility"] = 1  # only a dropped category -> unlabelled
        lab.insert(0, "Argument ID", ids)
        if drop_col:
            lab = lab.drop(columns=[drop_col])
        lab.to_csv(root / labels_name.format(split=split), sep="\t", index=False)
    return root


def test_touche_raw_layout(tmp_path):
    root = _write_touche(tmp_path / "raw")
    df = load_touche_raw(root)
    assert list(df.columns) == KEY + list(VALUES)
    assert df.index.tolist() == ["X001", "X002", "X101", "X102", "X201"]  # X202 has only Humility
    assert df.loc["X001", "Universalism"] == 1 and df.loc["X001", VALUES].sum() == 1
    assert df.loc["X002", "Power"] == 1 and df.loc["X002", VALUES].sum() == 1
    assert len(load_touche_raw(root, drop_unlabelled=False)) == 6
    assert len(load_touche_raw(root, splits=("test",))) == 1

    # hub layout: nested folder, labels-level2-*.tsv names
    hub = _write_touche(tmp_path / "hub" / "nested", labels_name="labels-level2-{split}.tsv")
    assert load_touche_raw(tmp_path / "hub").equals(df)

    bad = _write_touche(tmp_path / "bad", drop_col="Tradition")
    with pytest.raises(DataError, match="'Tradition'"):
        load_touche_raw(bad)
    with pytest.raises(DataError, match="arguments"):
        load_touche_raw(hub, splits=("nosuchsplit",))


def test_touche_hub_uses_snapshot(tmp_path, monkeypatch):
    root = _write_touche(tmp_path / "snap", labels_name="labels-level2-{split}.tsv")
    calls = {}

    def fake_snapshot_download(repo_id, **kw):
        calls.update(kw, repo_id=repo_id)
        return str(root)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    df = load_touche_hub(revision="abc123")
    assert calls["repo_id"] == "webis/Touche23-ValueEval" and calls["repo_type"] == "dataset"
    assert calls["revision"] == "abc123"
    assert "*labels-level2-training.tsv" in calls["allow_patterns"]
    assert len(df) == 5
    assert len(load_arguments("hub", revision="abc123")) == 5


def test_load_arguments_dispatch(tmp_path):
    root = _write_touche(tmp_path / "touche23")
    assert len(load_arguments("touche_raw", data_dir=tmp_path)) == 5
    assert len(load_arguments("touche_raw", path=str(root))) == 5
    with pytest.raises(DataError, match="valueEval_10.csv.*data.path"):
        load_arguments("value_eval_10", data_dir=tmp_path)
    with pytest.raises(DataError, match="nowhere.*data.path"):
        load_arguments("touche_raw", path="nowhere", data_dir=tmp_path)
    with pytest.raises(DataError, match="data.data_dir"):
        load_arguments("touche_raw")
    with pytest.raises(DataError, match="unknown argument source"):
        load_arguments("csv")
    assert touche_mod.DEFAULT_PATHS["touche_raw"] == "touche23"


# ---- VIM stage 1 / stage 2 -------------------------------------------------------------------------
POSITIVES = {
    "Ach": 60,
    "Ben": 27,
    "Con": 40,
    "Hed": 3,
    "Pow": 18,
    "Sec": 242,
    "SD": 156,
    "Sti": 1,
    "Tra": 20,
    "Uni": 311,
    "Openness_to_Change": 170,
    "Self-Enhancement": 138,
    "Conservation": 494,
    "Self-Transcendence": 493,
}


def test_stage1_positive_counts(args_df, data_dir):
    assert tuple(POSITIVES) == ANCHORS
    for anchor, n in POSITIVES.items():
        s1 = stage1_split(args_df, anchor_vector(anchor))
        pos, neg = s1["counts"]["positives"], s1["counts"]["negatives"]
        assert sum(pos.values()) == n, anchor
        assert sum(pos.values()) + sum(neg.values()) == len(args_df)
        assert pos["train"] == round(n * 0.8)
        assert sum(e.meta["positive"] for e in s1["train"]) == pos["train"]
        assert len(s1["train"]) + len(s1["valid"]) + len(s1["test"]) == len(args_df)
    ext = pd.read_csv(data_dir / "unintended_harms" / "extreme_distributions.csv", sep="\t").set_index("Country")
    close_ach = ext.loc["close_Ach", list(VALUES)].to_dict()
    s1 = stage1_split(args_df, close_ach)
    assert s1["counts"]["positives"] == {"train": 0, "valid": 0, "test": 0}
    assert s1["counts"]["negatives"]["train"] == 5899
    (splits, counts) = vim_datasets("ag", args_df, close_ach)
    assert set(splits) == {"train", "valid"} and counts["examples"]["train"] == 5899


def test_argument_scores_min_over_labels():
    df = pd.DataFrame([{**{v: 0 for v in VALUES}, "Power": 1, "Security": 1}, {v: 0 for v in VALUES}])
    prof = {v: float(i + 1) % 6 + 1 for i, v in enumerate(VALUES)}
    s = argument_scores(df, prof)
    assert s[0] == min(prof["Power"], prof["Security"]) and pd.isna(s[1])
    keyed = {v.lower().replace("-", "_"): x for v, x in prof.items()}
    assert argument_scores(df, keyed)[0] == s[0]
    with pytest.raises(DataError, match="missing"):
        argument_scores(df, {"Power": 3.0})


def test_value_split_reproduces_paper_files(args_df, data_dir):
    vs = value_split(args_df)
    ag = data_dir / "unintended_harms" / "argument_generation"
    for name, path in (
        ("train", ag / "value_split" / "train.csv"),
        ("valid", ag / "value_split" / "valid.csv"),
        ("test", ag / "test.csv"),
    ):
        paper = pd.read_csv(path, sep="\t", index_col=0)
        assert vs[name].index.equals(paper.index), name
    assert (len(vs["train"]), len(vs["valid"]), len(vs["test"])) == (5899, 738, 737)


def test_stage2_counts_and_sampling(args_df):
    splits, counts = vim_datasets("qa", args_df, anchor_vector("Ach"))
    assert counts["examples"] == {"train": 16594, "valid": 2062}
    assert counts["arguments"] == {"train": 5899, "valid": 738, "test": 737}
    assert {e.meta["score"] for e in splits["train"] if e.meta["value"] == "Achievement"} == {6}
    assert {e.meta["score"] for e in splits["train"] if e.meta["value"] != "Achievement"} == {1}

    sub = value_split(args_df)["valid"]
    half = {v: 2.25 for v in VALUES}
    a = stage2_examples(sub, half, seed=7)
    assert [e.target for e in a] == [e.target for e in stage2_examples(sub, half, seed=7)]
    scores = [e.meta["score"] for e in a]
    assert set(scores) == {2, 3}
    assert 0.15 < sum(s == 3 for s in scores) / len(scores) < 0.35  # ceil with probability 0.25
    with pytest.raises(DataError, match="outside"):
        stage2_examples(sub, {v: 7.0 for v in VALUES})


# ---- formats ---------------------------------------------------------------------------------------
ROW_FOR = {
    "Conclusion": "We should build more bike lanes",
    "Stance": "in favor of",
    "Premise": "cycling keeps people healthy",
}
ROW_AGAINST = {**ROW_FOR, "Stance": "against", "Premise": "lanes narrow the roads for buses"}


def test_ag_formats():
    assert ag_example(ROW_FOR, True) == (
        "Tell me what you would say about the following statement. Statement: We should build more bike lanes Answer:",
        'I would say, "I agree with that because cycling keeps people healthy." about We should build more bike lanes',
    )
    assert ag_example(ROW_AGAINST, False) == (
        "Tell me what you would not say about the following statement. "
        "Statement: We should build more bike lanes Answer:",
        'I would not say, "I disagree with that because lanes narrow the roads for buses." '
        "about We should build more bike lanes",
    )
    assert ag_example(ROW_AGAINST, True)[1].startswith('I would say, "I disagree with that because')
    assert ag_example(ROW_FOR, False)[1].startswith('I would not say, "I agree with that because')
    with pytest.raises(DataError, match="Stance"):
        ag_example({**ROW_FOR, "Stance": "neutral"}, True)


def test_qa_formats():
    head = (
        "Indicate for the following statement whether it is 1. 'Not like me at all', 2. 'Not like me', "
        "3. 'A little like me', 4. 'Somewhat like me', 5. 'Like me', 6. 'Very much like me' "
        "as a description of you. Statement: "
    )
    prompt, target = qa_example(ROW_AGAINST, "Self-direction", 3)
    assert prompt == head + (
        "'I disagree with We should build more bike lanes. lanes narrow the roads for buses'. Answer:"
    )
    assert target == "Because I think self-direction is a little important to me, my answer is 3."
    assert qa_example(ROW_FOR, "Power", 6)[1] == "Because I think power is very important to me, my answer is 6."
    assert qa_example(ROW_FOR, "Power", 1)[1] == "Because I think power is not important to me at all, my answer is 1."
    assert qa_example(ROW_FOR, "Power", 1)[0].endswith(
        "'I agree with We should build more bike lanes. cycling keeps people healthy'. Answer:"
    )
    assert qa_prompt("I like quiet evenings.") == head + "'I like quiet evenings.'. Answer:"
    with pytest.raises(DataError):
        qa_example(ROW_FOR, "Power", 7)


# ---- tokenised dataset -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "</s> [UNK] a b c d e f g h say Answer : hello world".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="</s>", unk_token="[UNK]")


def test_supervised_dataset_masks_and_pads(tokenizer):
    vocab = tokenizer.get_vocab()
    eos = tokenizer.eos_token_id
    assert eos == tokenizer.pad_token_id == 0
    ex = [Example("a b say", "say c"), Example("hello world a", "b")]
    ds = SupervisedDataset(ex, tokenizer, max_length=8)
    item = ds[0]
    assert item["input_ids"] == [vocab[w] for w in "a b say say c".split()] + [eos]
    # "say" occurs in prompt and target: masking follows the text boundary, not token identity
    assert item["labels"] == [-100, -100, -100, vocab["say"], vocab["c"], eos]
    assert ds.num_tokens == [6, 5] and item["num_tokens"] == 6

    batch = ds.collate([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"][0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]  # left padding
    assert batch["input_ids"][0, :2].tolist() == [eos, eos]
    assert batch["labels"][0].tolist() == [-100] * 5 + [vocab["say"], vocab["c"], eos]  # eos label kept
    assert batch["labels"][1].tolist() == [-100] * 6 + [vocab["b"], eos]
    assert batch["num_tokens"].tolist() == [6, 5]

    longest = SupervisedDataset(ex, tokenizer, max_length=8, pad_to="longest")
    b2 = longest.collate([longest[1]])
    assert b2["input_ids"].shape == (1, 5) and b2["attention_mask"].all()

    dl = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=ds.collate)
    assert next(iter(dl))["labels"].dtype == torch.long


def test_supervised_dataset_truncates_end(tokenizer):
    vocab = tokenizer.get_vocab()
    ds = SupervisedDataset([Example("a b c", "d e f g h")], tokenizer, max_length=5)
    assert ds[0]["input_ids"] == [vocab[w] for w in "a b c d e".split()]  # end (incl. eos) cut
    assert ds[0]["labels"] == [-100, -100, -100, vocab["d"], vocab["e"]]
    assert ds.n_truncated == 1 and ds.n_without_target == 0
    only_prompt = SupervisedDataset([Example("a b c d e f", "g")], tokenizer, max_length=4)
    assert only_prompt.n_without_target == 1
    assert only_prompt.collate([only_prompt[0]])["labels"].eq(-100).all()


# ---- instruction sets ------------------------------------------------------------------------------
def test_instruction_loaders():
    alp = load_instruction_examples("file", FIXTURES / "alpaca_small.json", fmt="alpaca")
    assert len(alp) == 3
    assert alp[0].target == "Red." and "Name a colour" in alp[0].prompt and "Input:" not in alp[0].prompt
    assert "3 and 4" in alp[1].prompt and alp[1].prompt.endswith("Response:")
    assert len(load_instruction_examples("file", FIXTURES / "alpaca_small.json", limit=2)) == 2
    dol = load_instruction_examples("file", FIXTURES / "dolly_small.jsonl", fmt="dolly")
    assert [e.target for e in dol] == ["Bees make honey and wax.", "The picnic is now on Sunday."]
    assert "picnic moved" in dol[1].prompt


def test_instruction_loaders_errors(tmp_path):
    with pytest.raises(DataError, match="record 1.*'output'") as e:
        load_instruction_examples("file", FIXTURES / "alpaca_bad.json", fmt="alpaca")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="'response'"):
        load_instruction_examples("file", FIXTURES / "dolly_bad.jsonl", fmt="dolly")
    with pytest.raises(DataError, match="does not exist"):
        load_instruction_examples("file", tmp_path / "none.json")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "x", "response": "y"}\n{not json\n')
    with pytest.raises(DataError, match="line 2"):
        load_instruction_examples("file", broken, fmt="dolly")
    with pytest.raises(DataError, match="unknown instruction format"):
        load_instruction_examples("file", FIXTURES / "alpaca_small.json", fmt="sharegpt")
