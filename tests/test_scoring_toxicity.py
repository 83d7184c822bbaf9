"""Toxicity scoring: Perspective client (against a fake server), Detoxify (real class, tiny random
checkpoint), the profanity_check stand-in, the per-text fallback chain and the score cache.
Offline and fast (a few seconds)."""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers.fake_perspective import FakePerspective, fake_score
from helpers.tiny_detoxify import build_tiny_detoxify
from value_harms.config.schema import BreakerConfig, DetoxifyConfig, PerspectiveConfig, ScorerConfig
from value_harms.errors import ScorerError, ScorerUnavailable
from value_harms.scoring import CachedScorer, Score, ScoreCache, build_scorer
from value_harms.scoring.toxicity import chain as toxicity_mod
from value_harms.scoring.toxicity.chain import ToxicityChain, build_toxicity_scorer
from value_harms.scoring.toxicity.detoxify import DetoxifyScorer
from value_harms.scoring.toxicity.perspective import PerspectiveScorer
from value_harms.scoring.toxicity.profanity import ProfanityCheckScorer

KEY = "test-key-5f3a9c"
ROOT = Path(__file__).resolve().parents[1]


# -------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    srv = FakePerspective(valid_key=KEY, delay_s=0.5).start()
    yield srv
    srv.stop()


def pcfg(server: FakePerspective, **kw) -> PerspectiveConfig:
    base = dict(
        endpoint=server.endpoint, qps=0.0, max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=0.2
    )
    base.update(kw)
    return PerspectiveConfig(**base)


@pytest.fixture(scope="session")
def tiny_detox(tmp_path_factory):
    """(checkpoint, hf_dir) of a tiny random Detoxify model with a planted toxicity bias of 2.0."""
    bias = [2.0, -1.0, 0.0, 0.0, 0.0, 0.0]
    return build_tiny_detoxify(tmp_path_factory.mktemp("detox_planted"), planted_bias=bias)


@pytest.fixture(scope="session")
def random_detox(tmp_path_factory):
    """A tiny random Detoxify model (scores vary a little per text)."""
    return build_tiny_detoxify(tmp_path_factory.mktemp("detox_random"), seed=1)


@pytest.fixture
def no_hub(monkeypatch):
    """Detoxify's default download path fails at once, as without network (never downloads)."""
    import torch

    def refuse(*a, **k):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


@pytest.fixture(autouse=True)
def _fresh_log_once(monkeypatch):
    monkeypatch.setattr(toxicity_mod, "_LOGGED_ONCE", set())


def scfg(**kw) -> ScorerConfig:
    return ScorerConfig(name="test", **kw)


# -------------------------------------------------------------------------------------------------
# Perspective


def test_perspective_success_real_format(server):
    texts = ["hello there", "you are a stupid idiot", "a calm day"]
    with PerspectiveScorer(pcfg(server), KEY) as sc:
        scores = sc.score(texts)
    assert server.invalid == []
    assert [s.value for s in scores] == [fake_score(t) for t in texts]
    assert all(s.scorer == "perspective:TOXICITY" and s.error is None for s in scores)
    assert len(server.requests) == 3


def test_perspective_languages_setting_and_identity(server):
    """scorer.perspective.languages: ["en"] by default; null lets Perspective detect the language as the paper's
    code does. The default keeps stored keys; another setting is another scorer identity and score cache."""
    from value_harms.scoring.identity import scorer_identity

    n = len(server.languages)
    with PerspectiveScorer(pcfg(server), KEY) as sc:
        assert sc.score(["a detected text"])[0].value is not None
        default_id = sc.cache_id
    with PerspectiveScorer(pcfg(server, languages=None), KEY) as sc:
        assert sc.score(["another detected text"])[0].value is not None
        assert sc.cache_id != default_id and sc.provenance()["languages"] == "detected by Perspective"
    assert server.languages[n:] == [["en"], None]
    ident = {
        langs: scorer_identity(
            {"toxicity": "perspective", "perspective": {"endpoint": "e", "languages": langs}}, "toxicity"
        )
        for langs in (("en",), None)
    }
    old = scorer_identity({"toxicity": "perspective", "perspective": {"endpoint": "e"}}, "toxicity")
    assert ident[("en",)] != ident[None]
    assert (
        scorer_identity({"toxicity": "perspective", "perspective": {"endpoint": "e", "languages": ["en"]}}, "toxicity")
        == old
    ), "the default keeps the keys of stored results"


def test_perspective_duplicates_deduplicated(server):
    texts = ["a", "b", "a", "a", "b"]
    with PerspectiveScorer(pcfg(server), KEY) as sc:
        scores = sc.score(texts)
    assert len(server.requests) == 2
    assert [s.value for s in scores] == [fake_score(t) for t in texts]


@pytest.mark.parametrize("mode", ["429", "500", "timeout", "garbage"])
def test_perspective_retries_then_succeeds(server, mode):
    server.fail_next(mode, 2)
    with PerspectiveScorer(pcfg(server, max_retries=3), KEY) as sc:
        [s] = sc.score(["retry me"])
        assert sc.stats["retries"] == 2
    assert s.value == fake_score("retry me")
    assert len(server.requests) == 3  # 2 injected failures + 1 success


def test_perspective_truncates_long_text(server):
    with PerspectiveScorer(pcfg(server, max_chars=10), KEY) as sc:
        [s] = sc.score(["x" * 50])
    assert server.requests[0][0] == "x" * 10
    assert s.value == fake_score("x" * 10)


def test_perspective_400_is_missing_not_zero(server):
    server.fail_texts["texte en une autre langue"] = "400"
    with PerspectiveScorer(pcfg(server), KEY) as sc:
        ok, bad = sc.score(["fine", "texte en une autre langue"])
    assert ok.value == fake_score("fine")
    assert bad.value is None and "400" in bad.error
    assert sum(1 for t, *_ in server.requests if t.startswith("texte")) == 1  # no retry


def test_perspective_403_raises_at_once_without_leaking_key(server, caplog):
    caplog.set_level(logging.DEBUG)  # urllib3 logs request URLs (with ?key=) at DEBUG
    server.fail_next("403", 1)
    sc = PerspectiveScorer(pcfg(server), KEY)
    with pytest.raises(ScorerError) as info:
        sc.score(["first", "second"])
    assert len(server.requests) == 1  # no retry, no further texts
    prov = json.dumps(sc.provenance())
    sc.close()
    msg = str(info.value)
    assert "403" in msg and "PERSPECTIVE_API_KEY" in msg
    for where in (msg, repr(info.value), repr(sc), prov, caplog.text, " ".join(r.getMessage() for r in caplog.records)):
        assert KEY not in where
    assert any("127.0.0.1" in r.getMessage() for r in caplog.records)  # urllib3 did log the URL


def test_perspective_wrong_key_via_chain_stops_run(server, monkeypatch, caplog):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", "wrong-key-1234")
    cfg = scfg(toxicity="perspective", fallback=["profanity_check"], perspective=pcfg(server))
    chain = build_toxicity_scorer(cfg)
    with pytest.raises(ScorerError) as info:
        chain.score(["some text"])
    assert "wrong-key-1234" not in str(info.value) and "wrong-key-1234" not in caplog.text


def test_perspective_qps_respected(server):
    texts = [f"text number {i}" for i in range(5)]
    with PerspectiveScorer(pcfg(server, qps=20.0), KEY) as sc:
        t0 = time.monotonic()
        sc.score(texts)
        elapsed = time.monotonic() - t0
    # 5 request starts at least 1/20 s apart: >= 4 intervals = 0.2 s
    assert 0.2 <= elapsed < 3.0
    assert len(server.requests) == 5


def test_backoff_is_capped(server, monkeypatch):
    slept = []
    monkeypatch.setattr(time, "sleep", lambda s: slept.append(s))
    server.fail_texts["always failing"] = "429"
    cfg = pcfg(server, max_retries=6, backoff_base_s=1.0, backoff_max_s=4.0)
    # a breaker that tolerates the 7 failures: this test is about the waits between them
    with PerspectiveScorer(cfg, KEY, breaker_cfg=BreakerConfig(max_consecutive_failures=10)) as sc:
        [s] = sc.score(["always failing"])
    assert s.value is None and "gave up after 7 attempts" in s.error
    assert len(slept) == 6 and max(slept) <= 4.0 and slept[0] <= 1.0
    assert slept[-1] >= 2.0  # grew exponentially, then hit the cap


# -------------------------------------------------------------------------------------------------
# Chain: per-text fallback, provenance, cache


def test_chain_retries_exhausted_fall_back_per_text(server, monkeypatch):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    server.fail_texts["server hates this one"] = "500"
    cfg = scfg(toxicity="perspective", fallback=["profanity_check"], perspective=pcfg(server, max_retries=2))
    chain = build_toxicity_scorer(cfg)
    texts = ["hello", "server hates this one", "good morning"]
    scores = chain.score(texts)
    assert [s.scorer for s in scores][0::2] == ["perspective:TOXICITY"] * 2
    assert scores[1].scorer.startswith("profanity_check") and "(stand-in)" in scores[1].scorer
    assert scores[1].value is not None
    assert sum(1 for t, *_ in server.requests if t == "server hates this one") == 3
    prov = chain.provenance()
    assert prov["counts"] == {"perspective:TOXICITY": 2, scores[1].scorer: 1}
    assert prov["fallback_texts"] == 1 and prov["missing"] == 0 and prov["stand_in"] is True
    assert prov["backends"]["perspective"]["stats"]["gave_up"] == 1
    chain.close()


def test_chain_400_falls_back_to_detoxify_or_counts_missing(server, monkeypatch, tiny_detox):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    ckpt, hf = tiny_detox
    server.fail_texts["unsupported"] = "400"
    det = DetoxifyConfig(checkpoint=str(ckpt), huggingface_config_path=str(hf))
    chain = build_toxicity_scorer(
        scfg(toxicity="perspective", fallback=["detoxify"], perspective=pcfg(server), detoxify=det)
    )
    ok, fb = chain.score(["fine", "unsupported"])
    assert ok.scorer == "perspective:TOXICITY"
    assert fb.scorer == "detoxify:original" and fb.value == pytest.approx(1 / (1 + math.exp(-2)), abs=1e-5)
    assert chain.provenance()["stand_in"] is False
    # Without a fallback the text is a counted missing value, never 0.
    alone = build_toxicity_scorer(scfg(toxicity="perspective", fallback=[], perspective=pcfg(server)))
    ok, miss = alone.score(["fine", "unsupported"])
    assert miss.value is None and "HTTP 400" in miss.error and alone.provenance()["missing"] == 1


def test_cache_hit_avoids_requests(server, monkeypatch, tmp_path):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    cfg = scfg(toxicity="perspective", fallback=[], perspective=pcfg(server))
    db = tmp_path / "scores.sqlite"
    texts = ["one", "two", "one"]
    first = build_toxicity_scorer(cfg, cache_path=db)
    a = first.score(texts)
    first.close()
    assert len(server.requests) == 2
    second = build_toxicity_scorer(cfg, cache_path=db)
    b = second.score(texts + ["three"])
    assert [s.value for s in b[:3]] == [s.value for s in a]
    assert len(server.requests) == 3  # only "three" was requested
    assert second.provenance()["backends"]["perspective"]["cache"]["hits"] == 2
    second.close()


def test_cache_stores_only_successes(tmp_path):
    cache = ScoreCache(tmp_path / "c.sqlite")
    k1, k2 = ScoreCache.key("a"), ScoreCache.key("b", context="ctx")
    assert k1 != ScoreCache.key("a", context="ctx")
    n = cache.put_many("s", [(k1, Score(0.25, "s")), (k2, Score(None, "s", error="boom"))])
    assert n == 1 and len(cache) == 1
    got = cache.get_many("s", [k1, k2])
    assert got == {k1: Score(0.25, "s")}
    assert cache.get_many("other-scorer", [k1]) == {}
    cache.close()


def test_corrupted_cache_detected_and_replaced(tmp_path, caplog):
    db = tmp_path / "scores.sqlite"
    db.write_bytes(b"this is not a sqlite database at all" * 200)
    with caplog.at_level(logging.WARNING):
        cache = ScoreCache(db)
    aside = list(tmp_path.glob("scores.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    assert "not a usable sqlite database" in caplog.text
    cache.put_many("s", [(ScoreCache.key("x"), Score(0.5, "s"))])
    assert len(cache) == 1
    cache.close()


def test_cached_scorer_wraps_any_scorer(tmp_path):
    inner = ProfanityCheckScorer()
    calls = []
    real = inner.score
    inner.score = lambda texts, contexts=None: calls.append(list(texts)) or real(texts, contexts)
    cs = CachedScorer(inner, ScoreCache(tmp_path / "c.sqlite"))
    cs.score(["x y", "z"])
    cs.score(["z", "w"])
    assert calls == [["x y", "z"], ["w"]]
    cs.close()


# -------------------------------------------------------------------------------------------------
# Detoxify (the real class) and profanity_check


def test_detoxify_real_class_planted_scores(tiny_detox):
    ckpt, hf = tiny_detox
    sc = DetoxifyScorer(DetoxifyConfig(checkpoint=str(ckpt), huggingface_config_path=str(hf), batch_size=4))
    texts = ["hello world", "you are a stupid idiot", "", "idiot " * 500] + [f"w{i}" for i in range(9)]
    scores = sc.score(texts)
    assert len(scores) == len(texts)
    expected = 1 / (1 + math.exp(-2.0))  # sigmoid(planted toxicity bias)
    assert all(s.value == pytest.approx(expected, abs=1e-5) for s in scores)
    assert all(s.scorer == "detoxify:original" for s in scores)
    prov = sc.provenance()
    assert prov["backend"] == "detoxify" and prov["version"] == "0.5.4" and not prov["stand_in"]
    assert sc.model.class_names[0] == "toxicity"


def test_detoxify_batching_matches_per_text(random_detox):
    ckpt, hf = random_detox
    texts = [
        "hello world",
        "you are a stupid idiot",
        "the people have a good day",
        "bad",
        "thank you friend",
        "hello",
    ] * 2
    mk = lambda bs: DetoxifyScorer(
        DetoxifyConfig(
            checkpoint=str(ckpt),  # noqa: E731
            huggingface_config_path=str(hf),
            batch_size=bs,
        )
    )
    batched = [s.value for s in mk(16).score(texts)]
    single = [s.value for s in mk(1).score(texts)]
    assert batched == pytest.approx(single, abs=1e-5)
    assert all(0.0 < v < 1.0 for v in batched)
    assert len(set(round(v, 6) for v in batched)) > 1  # random weights: texts differ
    assert batched[:6] == batched[6:]


def test_detoxify_checkpoint_naming_hub_model_loads_offline(tmp_path, monkeypatch):
    """A real release checkpoint stores model_type 'bert-base-uncased': with
    huggingface_config_path set it must still load without any hub lookup."""
    import torch

    ckpt, hf = build_tiny_detoxify(tmp_path, planted_bias=[1.0] + [0.0] * 5)
    loaded = torch.load(ckpt, weights_only=False)
    loaded["config"]["arch"]["args"]["model_type"] = "bert-base-uncased"
    torch.save(loaded, ckpt)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sc = DetoxifyScorer(DetoxifyConfig(checkpoint=str(ckpt), huggingface_config_path=str(hf)))
    [s] = sc.score(["hello"])
    assert s.value == pytest.approx(1 / (1 + math.exp(-1.0)), abs=1e-5)


def test_detoxify_without_weights_is_unavailable(no_hub, tmp_path):
    with pytest.raises(ScorerUnavailable, match="weights unavailable"):
        DetoxifyScorer(DetoxifyConfig())
    with pytest.raises(ScorerUnavailable, match="not found"):
        DetoxifyScorer(DetoxifyConfig(checkpoint=str(tmp_path / "nope.ckpt")))


def test_profanity_check_orders_texts():
    sc = ProfanityCheckScorer()
    clean, rude = sc.score(["have a nice day, my friend", "you are a stupid idiot"])
    assert 0.0 <= clean.value < rude.value <= 1.0
    assert rude.value > 0.5 and clean.value < 0.5
    prov = sc.provenance()
    assert prov["stand_in"] is True and "stand-in: not Perspective/Detoxify" in prov["note"]
    assert "(stand-in)" in clean.scorer and "alt-profanity-check-1.9.1" in clean.scorer


# -------------------------------------------------------------------------------------------------
# Chain building


def test_chain_without_key_or_weights_is_stand_in(monkeypatch, no_hub, caplog):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with caplog.at_level(logging.INFO):
        chain = build_scorer("toxicity", scfg())  # default: perspective > detoxify > profanity_check
    assert isinstance(chain, ToxicityChain)
    assert "PERSPECTIVE_API_KEY not set: toxicity falls back to" in caplog.text
    scores = chain.score(["you are a stupid idiot", "have a nice day"])
    assert all("(stand-in)" in s.scorer for s in scores)
    prov = chain.provenance()
    assert prov["stand_in"] is True and chain.stand_in
    assert set(prov["unavailable"]) == {"perspective", "detoxify"}
    assert prov["chain"] == ["perspective", "detoxify", "profanity_check"]


def test_chain_without_key_uses_detoxify(monkeypatch, tiny_detox, caplog):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    ckpt, hf = tiny_detox
    cfg = scfg(detoxify=DetoxifyConfig(checkpoint=str(ckpt), huggingface_config_path=str(hf)))
    with caplog.at_level(logging.WARNING):
        chain = build_toxicity_scorer(cfg)
    assert "PERSPECTIVE_API_KEY not set: toxicity falls back to detoxify" in caplog.text
    scores = chain.score(["a", "b", "a"])
    assert [s.scorer for s in scores] == ["detoxify:original"] * 3
    prov = chain.provenance()
    assert prov["stand_in"] is False and prov["counts"] == {"detoxify:original": 3}
    assert "profanity_check" not in prov["backends"]  # later fallbacks are built only when needed


def test_no_backend_at_all_raises_one_line(monkeypatch, no_hub):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(ScorerError) as info:
        build_toxicity_scorer(scfg(toxicity="perspective", fallback=["detoxify"]))
    msg = str(info.value)
    assert "\n" not in msg and "PERSPECTIVE_API_KEY" in msg and "checkpoint" in msg


def test_unknown_backend_and_measure():
    with pytest.raises(ValueError, match="unknown toxicity backend"):
        build_toxicity_scorer(scfg(toxicity="perspectiv"))
    with pytest.raises(ValueError, match="unknown measure"):
        build_scorer("toxic", scfg())


@pytest.mark.parametrize(
    "preset,primary,fallback",
    [
        ("default", "perspective", ["detoxify", "profanity_check"]),
        ("perspective", "perspective", ["detoxify"]),
        ("detoxify", "detoxify", []),
        ("profanity_check", "profanity_check", []),
    ],
)
def test_conf_presets_typed(preset, primary, fallback):
    path = ROOT / "conf" / "scorer" / f"{preset}.yaml"
    assert path.read_text().startswith("#")
    cfg = OmegaConf.merge(OmegaConf.structured(ScorerConfig), OmegaConf.load(path))
    assert cfg.name == preset and cfg.toxicity == primary and list(cfg.fallback) == fallback
    assert cfg.perspective.api_key_env == "PERSPECTIVE_API_KEY"


def test_profanity_preset_builds_from_omegaconf(monkeypatch):
    cfg = OmegaConf.merge(
        OmegaConf.structured(ScorerConfig), OmegaConf.load(ROOT / "conf" / "scorer" / "profanity_check.yaml")
    )
    chain = build_scorer("toxicity", cfg)
    [s] = chain.score(["hello"])
    assert s.value is not None and chain.provenance()["stand_in"]
