"""The one interface every scorer implements (HELM-style scoring clients).

A scorer maps texts (and optional contexts) to `Score`s, one per text, same order. A failure is a
`Score` whose `value` is None with an `error` saying why: it is counted as missing, never scored 0.
An unrecoverable problem (a rejected credential, no backend at all) raises `ScorerError` so the run
stops instead of producing a table of missing values.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass
from typing import Any, Sequence

# One config getter for the package; re-exported here because most scorers read their settings through it.
from value_harms.config.access import cfg_get as cfg_get
from value_harms.store.hashing import sha256_text


@dataclass
class Score:
    """One scored text. `value` None = missing (never 0 for a failure)."""

    value: float | None
    scorer: str  # provenance of THIS score, e.g. "perspective:TOXICITY", "detoxify:original"
    label: str | None = None  # categorical outcome (regard label, judge flag) when relevant
    error: str | None = None  # why value is None
    raw: str | None = None  # raw answer (judge text) when useful

    @property
    def ok(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Score":
        return cls(
            value=None if d.get("value") is None else float(d["value"]),
            scorer=str(d.get("scorer", "")),
            label=d.get("label"),
            error=d.get("error"),
            raw=d.get("raw"),
        )

    @classmethod
    def missing(cls, scorer: str, error: str) -> "Score":
        return cls(value=None, scorer=scorer, error=error)


def text_key(text: str, context: str | None = None) -> str:
    """sha256 of context + NUL + text: the per-text identity used by caches and de-duplication."""
    return sha256_text((context or "") + "\x00" + text)


def check_inputs(texts: Sequence[str], contexts: Sequence[str] | None) -> None:
    if contexts is not None and len(contexts) != len(texts):
        raise ValueError(f"contexts has {len(contexts)} entries for {len(texts)} texts")


def unique_items(
    texts: Sequence[str], contexts: Sequence[str] | None = None
) -> tuple[list[tuple[str, str | None]], list[int]]:
    """De-duplicate (text, context) pairs in first-seen order.

    Returns the unique pairs and, for each input position, the index of its pair in that list, so
    results scored once per unique pair are spread back with `[res[i] for i in index]`.
    """
    check_inputs(texts, contexts)
    seen: dict[tuple[str, str | None], int] = {}
    uniq: list[tuple[str, str | None]] = []
    index: list[int] = []
    for i, t in enumerate(texts):
        key = (t, None if contexts is None else contexts[i])
        j = seen.get(key)
        if j is None:
            j = seen[key] = len(uniq)
            uniq.append(key)
        index.append(j)
    return uniq, index


class Scorer(abc.ABC):
    """Scores texts for one measure ("toxicity" | "regard" | "harmfulness" | "flag").

    `score` returns one `Score` per input, same length and order; implementations remove duplicate
    texts before any request (see `unique_items`) and show progress with tqdm. Clients (HTTP
    sessions, models) should be created lazily or in `__init__`, and released by `close`.
    """

    name: str = "scorer"
    measure: str = "toxicity"

    @abc.abstractmethod
    def score(self, texts: list[str], contexts: list[str] | None = None) -> list[Score]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients / models. Idempotent."""

    @abc.abstractmethod
    def provenance(self) -> dict:
        """What produced the scores: backend, version, variant, stand-in flag, ..."""

    @property
    def cache_id(self) -> str:
        """Identity of the scores this scorer produces (cache key part). Override when settings
        that change a score (model revision, variant, rubric) are not in `name`."""
        return self.name

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
