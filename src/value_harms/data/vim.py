"""VIM training examples (Kang et al. 2023), as used by Choi et al. 2025.

Protocol: ../shared/docs/PROTOCOL.md "VIM training data"; read from dongjunKANG/VIM @ 034fcfa
(src/preprocessing.py: stage-1 scores and splits; src/dataset/d_argument.py: AG formats;
src/dataset/d_survey.py: QA formats and score sampling). The short format strings below are protocol
text reproduced exactly.

Stage 1 (argument generation, AG): score(argument) = min over its labelled values of the profile's value;
positive if score >= threshold (3). Positives and negatives are each split 80/10/10.
Stage 2 (question answering, QA): one example per (argument, labelled value) on `value_split`
train/valid; the answer score is floor/ceil of the profile's value, ceil with probability frac.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from value_harms.core.values import IMPORTANCE_LABELS, KEY_TO_VALUE, VALUES
from value_harms.errors import DataError

# ---- formats (VIM src/dataset/d_argument.py, d_survey.py; PROTOCOL.md "VIM training data") ----------
AG_PROMPT_POSITIVE = "Tell me what you would say about the following statement. Statement: {conclusion} Answer:"
AG_PROMPT_NEGATIVE = "Tell me what you would not say about the following statement. Statement: {conclusion} Answer:"
AG_TARGET_POSITIVE = 'I would say, "I {verb} with that because {premise}." about {conclusion}'
AG_TARGET_NEGATIVE = 'I would not say, "I {verb} with that because {premise}." about {conclusion}'
QA_PROMPT = (
    "Indicate for the following statement whether it is 1. 'Not like me at all', 2. 'Not like me', "
    "3. 'A little like me', 4. 'Somewhat like me', 5. 'Like me', 6. 'Very much like me' as a description "
    "of you. Statement: '{statement}'. Answer:"
)
QA_STATEMENT = "I {verb} with {conclusion}. {premise}"
QA_TARGET = "Because I think {value} is {label}, my answer is {score}."
STANCE_VERB = {"in favor of": "agree", "against": "disagree"}

# Join between prompt and target in the token sequence. VIM tokenises input and target separately and
# concatenates the ids (Llama's SentencePiece then starts the target with a word-initial piece, i.e. a
# space); the protocol says only "prompt + target + eos". We tokenise `prompt + JOINER + target` in one
# pass, so the target starts as a new word for any tokenizer, and mask the prompt by character offsets.
JOINER = " "


@dataclass
class Example:
    prompt: str
    target: str
    meta: dict = field(default_factory=dict)


def _verb(stance: str) -> str:
    try:
        return STANCE_VERB[stance]
    except KeyError:
        raise DataError(f"Stance must be 'in favor of' or 'against', got {stance!r}") from None


def ag_example(row: Mapping[str, Any], positive: bool) -> tuple[str, str]:
    """Stage-1 (prompt, target) for an argument row with Conclusion, Stance, Premise."""
    c, p, verb = row["Conclusion"], row["Premise"], _verb(row["Stance"])
    if positive:
        return AG_PROMPT_POSITIVE.format(conclusion=c), AG_TARGET_POSITIVE.format(verb=verb, premise=p, conclusion=c)
    return AG_PROMPT_NEGATIVE.format(conclusion=c), AG_TARGET_NEGATIVE.format(verb=verb, premise=p, conclusion=c)


def qa_prompt(statement: str) -> str:
    """The stage-2 input format around an arbitrary statement (also used for PVQ items)."""
    return QA_PROMPT.format(statement=statement)


def qa_example(row: Mapping[str, Any], value: str, score: int) -> tuple[str, str]:
    """Stage-2 (prompt, target) for an argument row, one of its values and an integer score 1..6."""
    if value not in VALUES:
        raise DataError(f"unknown value {value!r}; expected one of {', '.join(VALUES)}")
    if int(score) != score or not 1 <= score <= len(IMPORTANCE_LABELS):
        raise DataError(f"QA score must be an integer 1..{len(IMPORTANCE_LABELS)}, got {score!r}")
    score = int(score)
    statement = QA_STATEMENT.format(verb=_verb(row["Stance"]), conclusion=row["Conclusion"], premise=row["Premise"])
    target = QA_TARGET.format(value=value.lower(), label=IMPORTANCE_LABELS[score - 1], score=score)
    return qa_prompt(statement), target


def _statement_span(prompt: str, lead: str, tail: str) -> tuple[int, int] | None:
    """Character span of the argument text inside a VIM prompt (between `lead` and the last `tail`)."""
    a, b = prompt.find(lead), prompt.rfind(tail)
    return (a + len(lead), b) if a != -1 and b >= a + len(lead) else None


def _answer_digit_span(target: str) -> tuple[int, int] | None:
    """Character span of the answer digit of a QA target ("..., my answer is 4.")."""
    m = re.search(r"(\d)\.?\s*$", target)
    return (m.start(1), m.end(1)) if m else None


TRUNCATION_SIDES = ("end", "argument")


# ---- profiles and scores ---------------------------------------------------------------------------
def _profile(profile_values: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
    """Profile as {value name: float}; accepts VALUES names, VALUE_KEYS, or 10 numbers in VALUES order."""
    if isinstance(profile_values, Mapping):
        out = {KEY_TO_VALUE.get(k, k): float(v) for k, v in profile_values.items()}
        missing = [v for v in VALUES if v not in out]
        extra = [k for k in out if k not in VALUES]
        if missing or extra:
            raise DataError(f"profile values: missing {missing or 'none'}, unknown {extra or 'none'}")
        return {v: out[v] for v in VALUES}
    vals = [float(x) for x in profile_values]
    if len(vals) != len(VALUES):
        raise DataError(f"profile vector must have {len(VALUES)} numbers, got {len(vals)}")
    return dict(zip(VALUES, vals))


def argument_scores(args_df: pd.DataFrame, profile_values: Mapping[str, float] | Sequence[float]) -> pd.Series:
    """min over each argument's labelled values of the profile's value; NaN for an unlabelled argument
    (VIM src/preprocessing.py `min_score`)."""
    prof = _profile(profile_values)
    labels = args_df[list(VALUES)].to_numpy() == 1
    vec = np.array([prof[v] for v in VALUES])
    scored = np.where(labels, vec[None, :], np.inf).min(axis=1)
    scored[~labels.any(axis=1)] = np.nan
    return pd.Series(scored, index=args_df.index, name="score")


def _split_80_10_10(df: pd.DataFrame, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    # VIM src/preprocessing.py: train = sample(frac=0.8, random_state=42); rest = drop(train);
    # valid = rest.sample(frac=0.5, random_state=42); test = rest.drop(valid).
    train = df.sample(frac=0.8, random_state=seed)
    rest = df.drop(train.index)
    valid = rest.sample(frac=0.5, random_state=seed)
    test = rest.drop(valid.index)
    return train, valid, test


def value_split(args_df: pd.DataFrame, seed: int = 42) -> dict[str, pd.DataFrame]:
    """Argument split for stage 2. On valueEval_10.csv this reproduces the paper's value_split
    train.csv (5,899) / valid.csv (738) by index. The index must be unique."""
    if not args_df.index.is_unique:
        raise DataError("argument table index must be unique to split it")
    train, valid, test = _split_80_10_10(args_df, seed)
    return {"train": train, "valid": valid, "test": test}


def stage1_split(
    args_df: pd.DataFrame,
    profile_values: Mapping[str, float] | Sequence[float],
    threshold: float = 3.0,
    seed: int = 42,
) -> dict[str, Any]:
    """Stage-1 AG examples: {"train": [Example], "valid": [...], "test": [...], "counts": {...}}.

    Positives (score >= threshold) and negatives are split 80/10/10 separately; each split lists the
    positives first, then the negatives (as VIM's DS_argument). Unlabelled arguments are skipped and
    counted under counts["unlabelled"].
    """
    if not args_df.index.is_unique:
        raise DataError("argument table index must be unique to split it")
    scores = argument_scores(args_df, profile_values)
    labelled = scores.notna()
    pos = args_df[labelled & (scores >= threshold)]
    neg = args_df[labelled & (scores < threshold)]
    out: dict[str, Any] = {"train": [], "valid": [], "test": []}
    counts: dict[str, Any] = {"unlabelled": int((~labelled).sum())}
    for name, df, positive in (("positives", pos, True), ("negatives", neg, False)):
        parts = dict(zip(("train", "valid", "test"), _split_80_10_10(df, seed)))
        counts[name] = {k: len(v) for k, v in parts.items()}
        for split, part in parts.items():
            for idx, row in zip(part.index, part.to_dict("records")):
                prompt, target = ag_example(row, positive)
                out[split].append(
                    Example(
                        prompt,
                        target,
                        {
                            "stage": "ag",
                            "index": idx,
                            "positive": positive,
                            "score": float(scores[idx]),
                            "cut_span": _statement_span(prompt, "Statement: ", " Answer:"),
                        },
                    )
                )
    out["counts"] = counts
    return out


def stage2_examples(
    split_df: pd.DataFrame,
    profile_values: Mapping[str, float] | Sequence[float],
    seed: int = 42,
) -> list[Example]:
    """Stage-2 QA examples: one per (argument, labelled value v) in row order then VALUES order.

    t = profile[v]; s = ceil(t) with probability frac(t), else floor(t) (VIM d_survey.py draws with
    random.choices; we use numpy default_rng(seed), one uniform draw per example, so an integer t gives t).
    """
    prof = _profile(profile_values)
    for v, t in prof.items():
        if not 1 <= t <= len(IMPORTANCE_LABELS):
            raise DataError(f"profile value {v}={t} outside 1..{len(IMPORTANCE_LABELS)}")
    rng = np.random.default_rng(seed)
    out: list[Example] = []
    for idx, row in zip(split_df.index, split_df.to_dict("records")):
        for v in VALUES:
            if row[v] != 1:
                continue
            t = prof[v]
            lo = math.floor(t)
            s = lo + int(rng.random() < t - lo)
            prompt, target = qa_example(row, v, s)
            out.append(
                Example(
                    prompt,
                    target,
                    {
                        "stage": "qa",
                        "index": idx,
                        "value": v,
                        "target_value": t,
                        "score": s,
                        "cut_span": _statement_span(prompt, "Statement: '", "'. Answer:"),
                        "answer_span": _answer_digit_span(target),
                    },
                )
            )
    return out


QA_BALANCE = ("none", "score")


def balance_by_score(examples: Sequence[Example], seed: int = 42, power: float = 1.0) -> list[Example]:
    """About as many QA examples, resampled so that the answer scores are more evenly frequent (the cpu_study lever:
    for an extreme profile ~90% of QA targets are the lowest score and a short run learns "answer low").

    Score group g of size n_g gets ceil(n * w_g / sum w) examples with w_g = n_g ** (1 - power): power 1
    makes every score equally frequent, 0 keeps the original shares, 0.5 is in between (square-root
    weights). A group with enough examples is drawn without replacement, a smaller one is taken whole
    plus draws with replacement. Deterministic for a seed; the order is shuffled.
    """
    if not 0 <= power <= 1:
        raise ValueError(f"vim_stage.qa_balance_power={power!r}: expected a number in [0, 1]")
    groups: dict[int, list[Example]] = {}
    for e in examples:
        groups.setdefault(int(e.meta["score"]), []).append(e)
    if len(groups) < 2:
        return list(examples)
    rng = np.random.default_rng(seed)
    weights = {s: len(g) ** (1.0 - float(power)) for s, g in groups.items()}
    total = sum(weights.values())
    out: list[Example] = []
    for score in sorted(groups):
        g = groups[score]
        per = math.ceil(len(examples) * weights[score] / total - 1e-9)
        if len(g) >= per:
            idx = rng.choice(len(g), size=per, replace=False)
        else:
            idx = np.concatenate([np.arange(len(g)), rng.choice(len(g), size=per - len(g), replace=True)])
        out.extend(g[int(i)] for i in idx)
    return [out[int(i)] for i in rng.permutation(len(out))]


def vim_datasets(
    stage: str,
    args_df: pd.DataFrame,
    profile_values: Mapping[str, float] | Sequence[float],
    threshold: float = 3.0,
    seed: int = 42,
) -> tuple[dict[str, list[Example]], dict[str, Any]]:
    """Examples for stage "ag" or "qa": ({"train": [...], "valid": [...]}, counts).

    QA draws the valid scores with seed + 1 (independent of the train draws).
    """
    if stage == "ag":
        s1 = stage1_split(args_df, profile_values, threshold=threshold, seed=seed)
        counts = dict(s1["counts"])
        counts["examples"] = {k: len(s1[k]) for k in ("train", "valid", "test")}
        return {"train": s1["train"], "valid": s1["valid"]}, counts
    if stage == "qa":
        vs = value_split(args_df, seed=seed)
        train = stage2_examples(vs["train"], profile_values, seed=seed)
        valid = stage2_examples(vs["valid"], profile_values, seed=seed + 1)
        counts = {
            "arguments": {k: len(v) for k, v in vs.items()},
            "examples": {"train": len(train), "valid": len(valid)},
        }
        return {"train": train, "valid": valid}, counts
    raise DataError(f"unknown VIM stage {stage!r}; expected 'ag' or 'qa'")


# ---- tokenised dataset -----------------------------------------------------------------------------
class SupervisedDataset(torch.utils.data.Dataset):
    """prompt + JOINER + target + eos, cut at max_length, loss on target tokens only.

    truncation_side="end" (the paper's VIM): the END of a long sequence is cut, which can drop the
    answer of a QA example. truncation_side="argument": tokens are removed from the end of the
    argument text inside the prompt (Example.meta["cut_span"]; without one, from the start of the
    prompt) until the sequence fits, so the answer is kept; only if that is not enough is the end cut.
    Counts: n_truncated (sequences longer than max_length), n_without_target (no target token left),
    n_answer_lost (the answer - meta["answer_span"] in the target, e.g. the QA digit; the whole
    target when absent - lost at least one token).

    Tokenised once at construction (fast tokenizer, one batch call with offsets). Items are unpadded
    lists; `collate` left-pads to `max_length` (pad_to="max_length", as VIM) or to the longest item
    (pad_to="longest") and sets labels to -100 wherever attention_mask is 0 (pad may equal eos).
    """

    def __init__(
        self,
        examples: Sequence[Example],
        tokenizer,
        max_length: int = 128,
        pad_to: str = "max_length",
        joiner: str = JOINER,
        add_eos: bool = True,
        truncation_side: str = "end",
    ):
        # size: tokenisation under the protocol's truncation rules, in one pass with its counters
        if pad_to not in ("max_length", "longest"):
            raise ValueError(f"pad_to must be 'max_length' or 'longest', got {pad_to!r}")
        if truncation_side not in TRUNCATION_SIDES:
            raise ValueError(
                f"vim_stage.truncation_side={truncation_side!r}; expected one of {', '.join(TRUNCATION_SIDES)}"
            )
        self.truncation_side = truncation_side
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("SupervisedDataset needs a fast tokenizer (offsets mapping)")
        self.max_length = int(max_length)
        self.pad_to = pad_to
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError("tokenizer has neither a pad nor an eos token")
        eos = tokenizer.eos_token_id
        if add_eos and eos is None:
            raise ValueError("tokenizer has no eos token (add_eos=True)")
        self.examples = list(examples)
        texts = [e.prompt + joiner + e.target for e in self.examples]
        enc = (
            tokenizer(texts, return_offsets_mapping=True, add_special_tokens=True)
            if texts
            else {"input_ids": [], "offset_mapping": []}
        )
        self.input_ids: list[list[int]] = []
        self.labels: list[list[int]] = []
        self.n_truncated = 0
        self.n_without_target = 0
        self.n_answer_lost = 0
        # per token: 1 where it spells the answer (meta["answer_span"], e.g. the QA digit), else 0
        self.answer_flags: list[list[int]] = []
        for e, ids, offs in zip(self.examples, enc["input_ids"], enc["offset_mapping"]):
            boundary = len(e.prompt)
            is_target = []
            seen_target = False
            for start, end in offs:
                special = start == end
                t = (end > boundary and not special) or (special and seen_target)
                seen_target = seen_target or t
                is_target.append(t)
            ids = list(ids)
            labels = [i if t else -100 for i, t in zip(ids, is_target)]
            offs = [tuple(o) for o in offs]
            if add_eos and (not ids or ids[-1] != eos):
                ids.append(eos)
                labels.append(eos)
                offs.append((0, 0))
            # the answer's characters in the joined text; its tokens are those overlapping them
            a_span = e.meta.get("answer_span") or (0, len(e.target))
            a0, a1 = boundary + len(joiner) + a_span[0], boundary + len(joiner) + a_span[1]
            n_answer = sum(1 for s0, s1 in offs if s1 > s0 and s1 > a0 and s0 < a1)
            if len(ids) > self.max_length:
                self.n_truncated += 1
                if self.truncation_side == "argument":
                    span = e.meta.get("cut_span")
                    ids, labels, offs = _cut_argument(
                        ids, labels, offs, span or (0, boundary), len(ids) - self.max_length, from_end=span is not None
                    )
                ids, labels, offs = ids[: self.max_length], labels[: self.max_length], offs[: self.max_length]
            if n_answer and sum(1 for s0, s1 in offs if s1 > s0 and s1 > a0 and s0 < a1) < n_answer:
                self.n_answer_lost += 1
            if all(x == -100 for x in labels):
                self.n_without_target += 1
            self.answer_flags.append(
                [int(s1 > s0 and s1 > a0 and s0 < a1 and lab != -100) for (s0, s1), lab in zip(offs, labels)]
            )
            self.input_ids.append(ids)
            self.labels.append(labels)

    @property
    def answer_lost_share(self) -> float | None:
        """Share of examples whose answer lost a token to truncation (None for an empty set)."""
        return self.n_answer_lost / len(self.examples) if self.examples else None

    @property
    def num_tokens(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "input_ids": self.input_ids[i],
            "labels": self.labels[i],
            "num_tokens": len(self.input_ids[i]),
            "answer": self.answer_flags[i],
        }

    def collate(self, batch: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = self.max_length if self.pad_to == "max_length" else max(len(b["input_ids"]) for b in batch)
        n = len(batch)
        input_ids = torch.full((n, length), self.pad_id, dtype=torch.long)
        labels = torch.full((n, length), -100, dtype=torch.long)
        attention_mask = torch.zeros((n, length), dtype=torch.long)
        answer_mask = torch.zeros((n, length), dtype=torch.long)
        for r, b in enumerate(batch):
            ids = b["input_ids"][:length]  # items are already cut at max_length (the end is cut)
            k = len(ids)
            if k == 0:
                continue
            input_ids[r, length - k :] = torch.tensor(ids, dtype=torch.long)
            labels[r, length - k :] = torch.tensor(b["labels"][:k], dtype=torch.long)
            attention_mask[r, length - k :] = 1
            if b.get("answer") is not None:
                answer_mask[r, length - k :] = torch.tensor(b["answer"][:k], dtype=torch.long)
        labels = labels.masked_fill(attention_mask == 0, -100)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "num_tokens": attention_mask.sum(dim=1),
            "answer_mask": answer_mask * attention_mask,
        }


def _cut_argument(
    ids: list[int],
    labels: list[int],
    offs: list[tuple[int, int]],
    span: tuple[int, int],
    excess: int,
    from_end: bool = True,
):
    """Remove up to `excess` prompt tokens lying inside the character span `span`: from the end of the
    span backwards (the argument text) or, from_end=False, from its start (a prompt without a marked
    argument loses its beginning); labels and offsets follow."""
    inside = [i for i, (s0, s1) in enumerate(offs) if s1 > s0 and s0 >= span[0] and s1 <= span[1] and labels[i] == -100]
    k = min(excess, len(inside))
    drop = set(inside[len(inside) - k :] if from_end else inside[:k]) if k else set()
    keep = [i for i in range(len(ids)) if i not in drop]
    return [ids[i] for i in keep], [labels[i] for i in keep], [offs[i] for i in keep]
