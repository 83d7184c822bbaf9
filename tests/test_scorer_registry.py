"""The scorer identity by rule (scoring/identity.py) and a new scorer added where docs/ARCHITECTURE.md says.

- Stored keys hold: `fixtures/scorer_identities.json` was recorded by running the previous identity module
  (a hand-kept list of score-changing settings per scorer) on the configs below; the rule gives the same
  identity for every one of them, for every measure.
- The rule: every setting of the sections a scorer reads, minus those its schema marks transport, files by
  content, later settings out at the value stored results had; a scorer nobody listed is never `{}`.
- A new scorer (a toy keyword counter with a `weight` and a `timeout_s`) is registered in SCORERS, given its
  section in the typed schema and a scorer preset, and runs an evaluation through the real path (config
  check, generation on the tiny model, scoring, store): `weight` splits the key, `timeout_s` does not.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pytest

from helpers.cli import ROOT, tiny_job_args
from value_harms.config.schema.evaluate import transport
from value_harms.scoring.base import Score, Scorer

FIXTURE = Path(__file__).parent / "fixtures" / "scorer_identities.json"
MEASURE_NAMES = ("toxicity", "regard", "harmfulness", "flag", "alignment")


def _files(root: Path) -> dict[str, str]:
    """Files with fixed bytes: their content hashes are the same in every run."""
    (root / "cal").mkdir(parents=True, exist_ok=True)
    line = '{"prompt": {"text": "p%d", "toxicity": 0.%d}, "continuation": {"text": "c%d", "toxicity": 0.%d}}\n'
    (root / "cal" / "toxic.jsonl").write_text("".join(line % (i, i, i, i) for i in range(10)))
    (root / "rubric.txt").write_text("Rate {instruction} / {response} from 1 to 5.\n")
    (root / "detox.ckpt").write_bytes(b"\x00checkpoint bytes\x01")
    (root / "hf").mkdir(exist_ok=True)
    (root / "hf" / "config.json").write_text('{"model_type": "bert"}')
    return {"tmp": str(root)}


def _cases() -> dict[str, list[str]]:
    """name -> overrides of `evaluate` (placeholder {tmp}); the recorded identities are of these."""
    out = {
        f"scorer={s}": [f"scorer={s}"]
        for s in ("default", "perspective", "detoxify", "profanity_check", "llm_judge", "regard", "paper")
    }
    d, judge, cal = ["scorer=default"], ["scorer=llm_judge"], ["scorer.calibration.enabled=true"]
    cal_data = [*cal, "scorer.calibration.path=cal", "scorer.calibration.data_dir={tmp}"]
    perspective_other = [
        "scorer.perspective.endpoint=http://127.0.0.1:9/x",
        "scorer.perspective.attribute=SEVERE_TOXICITY",
    ]
    out |= {
        "languages_de": [*d, "scorer.perspective.languages=[de]"],
        "languages_null": [*d, "scorer.perspective.languages=null"],
        "languages_en": [*d, "scorer.perspective.languages=[en]"],
        "perspective_endpoint": [*d, *perspective_other],
        "detoxify_variant": [*d, "scorer.detoxify.variant=unbiased"],
        "detoxify_checkpoint": [*d, "scorer.detoxify.checkpoint={tmp}/detox.ckpt"],
        "fallback_none": [*d, "scorer.fallback=[]", "scorer.toxicity=detoxify"],
        "calibration_on": [*d, *cal_data],
        "calibration_job_data_dir": [*d, *cal, "scorer.calibration.path=cal", "paths.data_dir={tmp}"],
        "calibration_settings": [
            *d,
            *cal_data,
            "scorer.calibration.folds=3",
            "scorer.calibration.seed=7",
            "scorer.calibration.backends=[profanity_check]",
        ],
        "calibration_off_other_path": [*d, "scorer.calibration.path=elsewhere", "scorer.calibration.folds=9"],
        "rubric_file": [*judge, "scorer.judge.rubric_file={tmp}/rubric.txt"],
        "rubric_missing": [*judge, "scorer.judge.rubric_file=/nonexistent/rubric.txt"],
        "judge_local": [
            *judge,
            "scorer.judge.backend=transformers",
            "scorer.judge.model=some/judge",
            "scorer.judge.revision=abc",
            "scorer.judge.dtype=bfloat16",
            "scorer.judge.constrained=true",
            "scorer.judge.stand_in=true",
            "scorer.judge.temperature=0.7",
            "scorer.judge.top_p=0.9",
            "scorer.judge.max_tokens=16",
        ],
        "regard_model": ["scorer=regard", "scorer.regard.model=some/regard", "scorer.regard.revision=abc"],
        # transport settings: never part of the identity (each equals its scorer's plain case)
        "transport_default": [*d, *TRANSPORT_DEFAULT],
        "transport_judge": [*judge, *TRANSPORT_JUDGE],
        "transport_regard": ["scorer=regard", "scorer.regard.batch_size=1", "scorer.regard.device=cuda"],
    }
    return out


TRANSPORT_DEFAULT = [
    "scorer.perspective.qps=5",
    "scorer.perspective.timeout_s=3",
    "scorer.perspective.max_retries=1",
    "scorer.perspective.backoff_base_s=2",
    "scorer.perspective.backoff_max_s=9",
    "scorer.perspective.api_key_env=OTHER_KEY",
    "scorer.detoxify.batch_size=2",
    "scorer.detoxify.device=cuda",
    "scorer.breaker.max_consecutive_failures=2",
    "scorer.breaker.max_outage_s=5",
    "scorer.breaker.connect_timeout_s=1",
    "scorer.probe=false",
    "scorer.probe_timeout_s=2",
    "scorer.cache=false",
    "scorer.calibration.cache_dir={tmp}/cc",
]
TRANSPORT_JUDGE = [
    "scorer.judge.qps=9",
    "scorer.judge.max_retries=0",
    "scorer.judge.timeout_s=5",
    "scorer.judge.backoff_base_s=3",
    "scorer.judge.backoff_max_s=4",
    "scorer.judge.batch_size=1",
    "scorer.judge.device=cuda",
    "scorer.judge.api_key_env=OTHER",
]


@pytest.fixture
def scorer_cfg(compose, tmp_path):
    """scorer_cfg(*overrides) -> the composed `scorer` node; {tmp} names a folder of fixed files."""
    fmt = _files(tmp_path / "files")

    def _cfg(*overrides: str):
        return compose("evaluate", ["model=tiny", "logger=none", *[o.format(**fmt) for o in overrides]]).scorer

    _cfg.tmp = fmt["tmp"]  # type: ignore[attr-defined]
    return _cfg


def _identity(scorer_cfg_node, measure: str) -> dict:
    """What the evaluation job keys a result of `measure` by: the identity of the scorer the measure names."""
    from value_harms.eval.measures import MEASURES
    from value_harms.scoring.identity import scorer_identity

    return scorer_identity(scorer_cfg_node, MEASURES[measure].scorer)


def test_identities_are_those_the_listed_settings_gave(scorer_cfg):
    recorded = json.loads(FIXTURE.read_text())
    assert set(recorded) == set(_cases())
    for name, overrides in _cases().items():
        node = scorer_cfg(*overrides)
        for measure in MEASURE_NAMES:
            got = json.loads(json.dumps(_identity(node, measure)).replace(scorer_cfg.tmp, "{tmp}"))
            assert got == recorded[name][measure], (name, measure)
    assert recorded["transport_default"] == recorded["scorer=default"]
    assert recorded["transport_judge"] == recorded["scorer=llm_judge"]


def test_every_setting_not_marked_transport_is_part_of_the_identity(scorer_cfg):
    """Settings the old lists forgot (Perspective's max_chars, Detoxify's config folder, regard's mask and
    length) enter the identity as soon as they differ from what stored results were scored with."""
    base = {m: _identity(scorer_cfg("scorer=default"), m) for m in ("toxicity", "regard")}
    for measure, override in [
        ("toxicity", "scorer.perspective.max_chars=500"),
        ("toxicity", "scorer.detoxify.huggingface_config_path={tmp}/hf"),
        ("regard", "scorer.regard.mask_token=ABC"),
        ("regard", "scorer.regard.max_length=128"),
    ]:
        assert _identity(scorer_cfg("scorer=default", override), measure) != base[measure], override
    hf = _identity(scorer_cfg("scorer=default", "scorer.detoxify.huggingface_config_path={tmp}/hf"), "toxicity")
    assert re.fullmatch(r"[0-9a-f]{64}", hf["detoxify"]["huggingface_config_path"]), "a folder: by its content"


def test_a_scorer_the_registry_does_not_list_gets_every_setting_but_transport():
    from value_harms.scoring.identity import scorer_identity

    cfg = {"name": "x", "cache": True, "novel": {"depth": 3, "timeout_s": 1.0, "api_key_var": "K"}, "toxicity": "p"}
    got = scorer_identity(cfg, "novel")
    assert got and got["novel"] == {"depth": 3, "timeout_s": 1.0}, "no schema: only secrets are left out"
    assert "name" not in got and "cache" not in got, "the preset's name and the cache switch are transport"
    assert scorer_identity(cfg, None) == {}, "a measure nobody scores (the PVQ check) has no scorer identity"


def test_the_identity_module_names_no_scorer():
    """No per-scorer list to forget: the rule reads the registry and the schema, never a scorer's name."""
    src = (ROOT / "src" / "value_harms" / "scoring" / "identity.py").read_text()
    code = "\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith("#"))
    code = code.split('"""', 2)[2]  # after the module docstring
    for name in ("perspective", "detoxify", "judge", "regard", "calibration", "toxicity", "harmfulness", "flag"):
        assert f'"{name}"' not in code and f"'{name}'" not in code, name


# --------------------------------------------------------------------------------------------------
# A new scorer, added where docs/ARCHITECTURE.md says


@dataclass
class KeywordConfig:
    """The new scorer's section: `weight` changes scores, `timeout_s` only how long a request may take."""

    words: List[str] = field(default_factory=lambda: ["the", "a"])
    weight: float = 0.5
    timeout_s: float = transport(5.0)
    notes: Optional[str] = None


class KeywordScorer(Scorer):
    """The scorer module: the share of a text's words that are keywords, times `weight`, capped at 1."""

    name = "keyword"

    def __init__(self, section):
        self.words = {str(w) for w in section.words}
        self.weight = float(section.weight)

    @property
    def cache_id(self) -> str:  # the settings that change a score name its cached scores
        return f"keyword:{self.weight}:{','.join(sorted(self.words))}"

    def score(self, texts, contexts=None):
        shares = [sum(w in self.words for w in t.lower().split()) / max(1, len(t.split())) for t in texts]
        return [Score(min(1.0, self.weight * share), "keyword") for share in shares]

    def provenance(self) -> dict:
        return {"backend": "keyword", "weight": self.weight}


ARCH_SCORER_ROW = ("`SCORERS` in `scoring/__init__.py`", "`config/schema/evaluate.py`", "`conf/scorer/<name>.yaml`")


@pytest.fixture
def keyword_registered(monkeypatch):
    """The new scorer in each place docs/ARCHITECTURE.md names for a scorer, and nowhere else: its module
    (KeywordScorer above), its SCORERS entry, its section as a field of the typed ScorerConfig, its preset
    `scorer=keyword` (conf/scorer/keyword.yaml, here in Hydra's ConfigStore, which Hydra reads as that file).
    The toxicity measure is pointed at it, as a benchmark's measure names the scorer that scores it."""
    from hydra.core.config_store import ConfigStore

    from value_harms import scoring
    from value_harms.config import schema
    from value_harms.config.schema.evaluate import ScorerConfig
    from value_harms.eval import measures

    row = next(ln for ln in (ROOT / "docs" / "ARCHITECTURE.md").read_text().splitlines() if "**scorer**" in ln)
    assert all(place in row for place in ARCH_SCORER_ROW), row

    with_keyword = dataclasses.make_dataclass(
        "ScorerConfig", [("keyword", KeywordConfig, field(default_factory=KeywordConfig))], bases=(ScorerConfig,)
    )
    job = dataclasses.make_dataclass("JobConfig", [("scorer", Optional[with_keyword], None)], bases=(schema.JobConfig,))
    cs = ConfigStore.instance()
    cs.store(name="job_schema", node=job)
    preset = {"name": "keyword", "toxicity": "profanity_check", "fallback": [], "keyword": {"weight": 2.0}}
    cs.store(group="scorer", name="keyword", node=preset)
    monkeypatch.setitem(
        scoring.SCORERS, "keyword", scoring.ScorerKind(lambda name, cfg, cache: KeywordScorer(cfg.keyword))
    )
    keyword_measure = dataclasses.replace(measures.MEASURES["toxicity"], scorer="keyword", primary_key=None)
    monkeypatch.setitem(measures.MEASURES, "toxicity", keyword_measure)
    yield
    cs.store(name="job_schema", node=schema.JobConfig)
    cs.repo.get("scorer", {}).pop("keyword.yaml", None)


def test_a_new_scorer_is_keyed_by_its_settings_through_the_real_path(
    compose, tmp_path, cache_dir, data_dir, keyword_registered
):
    pytest.importorskip("profanity_check")  # the preset's toxicity chain, checked before generation
    from value_harms.eval.task import run_evaluate

    base = [
        *tiny_job_args(tmp_path, cache_dir, data_dir),
        "value_profile=vanilla",
        "benchmark=rtp",
        "benchmark.limit=3",
        "benchmark.num_samples=2",
        "benchmark.max_new_tokens=6",
        "scorer=keyword",
    ]

    def run(*extra):
        return run_evaluate(compose("evaluate", [*base, *extra]))

    first = run()
    assert first["status"] == "complete" and first["scorer"]["by_scorer"] == {"keyword": 6}
    assert first["scorer"]["provenance"] == {"backend": "keyword", "weight": 2.0}
    slower = run("scorer.keyword.timeout_s=60")
    assert slower["key"] == first["key"], "a transport setting never splits the key"
    heavier = run("scorer.keyword.weight=0.25")
    assert heavier["key"] != first["key"], "a setting that changes scores is part of the key, unlisted"
    assert heavier["scorer"]["provenance"]["weight"] == 0.25 and heavier["generation"]["cached"] == 3
    noted = run("scorer.keyword.notes=x")
    assert noted["key"] not in (first["key"], heavier["key"]), "a new setting enters unless marked transport"
    stored = {p.parent.name for p in Path(tmp_path / "store").rglob("results.json")}
    assert {first["key"], heavier["key"], noted["key"]} <= stored
