"""alt-profanity-check (MIT): an offline linear classifier, used only as a last-resort stand-in.

Its model (TF-IDF + calibrated linear SVM, shipped inside the wheel) was trained on the Jigsaw toxic
comments and Davidson et al. offensive-language data (ENVIRONMENT.md). It measures profanity and
offensiveness, not Perspective TOXICITY: every score it gives is marked as a stand-in.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from value_harms.errors import ScorerUnavailable
from value_harms.scoring.base import Score, Scorer, unique_items

STAND_IN_NOTE = "profanity_check (stand-in: not Perspective/Detoxify)"
_CHUNK = 1024


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("alt-profanity-check")
    except Exception:  # noqa: BLE001
        return "unknown"


class ProfanityCheckScorer(Scorer):
    """`profanity_check.predict_prob`: probability that a text is profane/offensive."""

    measure = "toxicity"

    def __init__(self) -> None:
        try:
            import profanity_check
        except ImportError as exc:
            raise ScorerUnavailable(
                f"alt-profanity-check is not installed (pip install alt-profanity-check): {exc}"
            ) from exc
        self._predict_prob = profanity_check.predict_prob
        self.version = _version()
        self.name = f"profanity_check:alt-profanity-check-{self.version} (stand-in)"

    @property
    def cache_id(self) -> str:
        return f"profanity_check:{self.version}"

    def score(self, texts: list[str], contexts: list[str] | None = None) -> list[Score]:
        uniq, index = unique_items(texts, None)
        values: list[float] = []
        chunks = range(0, len(uniq), _CHUNK)
        for start in tqdm(chunks, desc="profanity_check", disable=len(chunks) < 2, leave=False):
            part = [t for t, _ in uniq[start : start + _CHUNK]]
            values.extend(float(v) for v in self._predict_prob(part))
        scores = [Score(value=v, scorer=self.name) for v in values]
        return [scores[j] for j in index]

    def provenance(self) -> dict:
        return {
            "backend": "profanity_check",
            "scorer": self.name,
            "package": "alt-profanity-check",
            "version": self.version,
            "stand_in": True,
            "note": STAND_IN_NOTE,
        }
