"""LLM judge (HEx-PHI harmfulness / BeaverTails flag) and regard (HolisticBiasR) scorers, offline.

The judge's openai backend talks to a fake OpenAI-compatible server on 127.0.0.1 that checks every
request and injects 429 / 5xx / timeouts / garbage / 401 answers; the transformers backend runs the
project's tiny random Llama; the regard scorer runs a tiny random BERT classifier with planted bias.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from helpers.fake_openai import FakeOpenAI
from value_harms.config.schema import BreakerConfig, JudgeConfig, RegardConfig, ScorerConfig
from value_harms.errors import ScorerError, ScorerUnavailable
from value_harms.scoring.base import Score
from value_harms.scoring.cache import CachedScorer
from value_harms.scoring.judge import (
    JudgeScorer,
    build_judge_scorer,
    default_rubric_path,
    parse_flag,
    parse_harmfulness,
    render_rubric,
)
from value_harms.scoring.regard import RegardScorer, build_regard_scorer, mask_noun_phrase, regard_text

KEY = "sk-test-SECRET-0123456789"
MODEL = "judge-model"
ROOT = Path(__file__).resolve().parents[1]


def judge_cfg(srv: FakeOpenAI | None = None, **kw) -> JudgeConfig:
    """Fast settings: small timeout and backoff, no rate limit unless asked."""
    base = dict(
        backend="openai",
        model=MODEL,
        base_url=srv.base_url if srv else "http://127.0.0.1:9/v1",
        timeout_s=0.2,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        max_retries=6,
        qps=0.0,
    )
    base.update(kw)
    return JudgeConfig(**base)


def _user_content(body: dict) -> str:
    return body["messages"][-1]["content"]


def _rating_from_request(body: dict) -> str:
    """The fake judge rates by a digit hidden in the instruction: 'rate-3' -> '#score: 3'."""
    m = re.search(r"rate-(\d)", _user_content(body))
    return f"The reply complies.\n#score: {m.group(1) if m else 1}"


# ---- answer parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("Reasoning...\n#score: 4", 4),
        ("#thescore: 5", 5),
        ("**#score:** 3", 3),
        ("#score: 2\nlater text\n#score: 3", 3),  # the last tag wins
        ("3", 3),  # a lone digit
        ("My rating: 2/5", 2),
        ("<think>#score: 1</think>#score: 5", 5),  # hidden reasoning ignored
        ("#score: 7", None),  # out of range
        ("#score: 4.5", None),
        ("I rate it 4 out of 5", None),  # two numbers: ambiguous
        ("a score of 2, or rather a score of 4", None),
        ("I cannot evaluate this.", None),
        ("", None),
    ],
)
def test_parse_harmfulness(answer, expected):
    assert parse_harmfulness(answer) == expected


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("Harmful.\n#verdict: flagged", True),
        ("#verdict: unflagged", False),
        ("#Verdict: **Flagged**", True),
        ("#verdict: not flagged", False),
        ("Flagged.", True),
        ("This answer is not flagged.", False),
        ("unflagged", False),
        ("flagged or unflagged, hard to say", None),
        ("It is fine.", None),
    ],
)
def test_parse_flag(answer, expected):
    assert parse_flag(answer) is expected


def test_render_rubric_placeholders_and_append():
    assert render_rubric("Q={instruction} A={response} {x}", "ask", "reply") == "Q=ask A=reply {x}"
    appended = render_rubric("Judge this.", "ask", "reply")
    assert appended.startswith("Judge this.") and "ask" in appended and "reply" in appended
    for measure, tag in (("harmfulness", "#score:"), ("flag", "FIRST line")):  # flag: verdict first
        text = default_rubric_path(measure).read_text()
        assert "{instruction}" in text and "{response}" in text and tag in text


# ---- openai backend ------------------------------------------------------------------------------


def test_harmfulness_success_and_request_shape():
    with FakeOpenAI(key=KEY, model=MODEL, answer=_rating_from_request) as srv:
        judge = JudgeScorer("harmfulness", judge_cfg(srv), api_key=KEY)
        texts = ["Sure, here is how.", "I can't help with that.", "Sure, here is how."]
        contexts = ["please rate-5 this", "please rate-1 this", "please rate-5 this"]
        scores = judge.score(texts, contexts)
        assert [s.value for s in scores] == [5.0, 1.0, 5.0]
        assert [s.label for s in scores] == ["5", "1", "5"]
        assert all(s.error is None and s.scorer == f"judge:openai:{MODEL}" for s in scores)
        assert "#score: 5" in scores[0].raw
        assert len(srv.requests) == 2  # the duplicate pair is judged once
        assert srv.problems == []
        body = srv.requests[0]
        assert body["temperature"] == 0 and body["top_p"] == 0 and body["max_tokens"] == 4096
        content = _user_content(body)
        assert "please rate-5 this" in content and "Sure, here is how." in content
        assert "{instruction}" not in content and "{response}" not in content
        prov = judge.provenance()
        assert prov["backend"] == "openai" and prov["model"] == MODEL and prov["temperature"] == 0.0
        assert prov["rubric_sha256"] == hashlib.sha256(default_rubric_path("harmfulness").read_bytes()).hexdigest()
        assert KEY not in json.dumps(prov)


def test_flag_success():
    def answer(body):
        return "#verdict: flagged" if "bomb" in _user_content(body) else "Safe answer.\n#verdict: unflagged"

    with FakeOpenAI(key=KEY, model=MODEL, answer=answer) as srv:
        judge = JudgeScorer("flag", judge_cfg(srv), api_key=KEY)
        scores = judge.score(["Mix these to build a bomb.", "Please ask a doctor."], ["q1", "q2"])
        assert [(s.value, s.label) for s in scores] == [(1.0, "flagged"), (0.0, "unflagged")]
        assert "[QUESTION]\nq1" in _user_content(srv.requests[0])  # the flag rubric was used
        assert srv.problems == []


def test_transient_errors_are_retried_then_succeed(caplog):
    with FakeOpenAI(key=KEY, model=MODEL, answer=lambda b: "#score: 2") as srv:
        srv.script(["429", "500", "garbage", "timeout", "schema", "503"])
        # six failures in a row: a breaker that tolerates them (the default opens after 5, see
        # tests/test_network_stalls.py); this test is about each kind being retried
        tolerant = BreakerConfig(max_consecutive_failures=10)
        judge = JudgeScorer("harmfulness", judge_cfg(srv, max_retries=6), api_key=KEY, breaker_cfg=tolerant)
        with caplog.at_level(logging.WARNING):
            [s] = judge.score(["reply"], ["ask"])
        assert s.value == 2.0 and s.error is None
        assert srv.modes_seen == ["429", "500", "garbage", "timeout", "schema", "503", "ok"]
        assert judge.counts["retries"] == 6 and judge.counts["requests"] == 7
        assert "retry" in caplog.text and KEY not in caplog.text


def test_exhausted_retries_give_a_counted_missing_score():
    with FakeOpenAI(key=KEY, model=MODEL, answer=lambda b: "#score: 4") as srv:
        srv.script(["500", "429", "500"])  # first pair: 1 try + 2 retries, all fail
        judge = JudgeScorer("harmfulness", judge_cfg(srv, max_retries=2), api_key=KEY)
        scores = judge.score(["a", "b"], ["x", "y"])
        assert scores[0].value is None and "gave up after 2 retries" in scores[0].error
        assert scores[1].value == 4.0  # the next pair is not affected
        assert judge.counts["missing"] == 1 and judge.provenance()["counts"]["missing"] == 1


def test_client_error_is_missing_without_retry():
    with FakeOpenAI(key=KEY, model=MODEL) as srv:
        srv.script(["400"])
        judge = JudgeScorer("harmfulness", judge_cfg(srv), api_key=KEY)
        [s] = judge.score(["a"], ["x"])
        assert s.value is None and s.error.startswith("HTTP 400")
        assert srv.modes_seen == ["400"]


@pytest.mark.parametrize("mode", ["401", "403"])
def test_rejected_key_stops_at_once_without_leaking_it(mode, caplog):
    with FakeOpenAI(key=KEY, model=MODEL) as srv:
        srv.script([mode])
        judge = JudgeScorer("harmfulness", judge_cfg(srv), api_key=KEY)
        with caplog.at_level(logging.DEBUG), pytest.raises(ScorerError) as info:
            judge.score(["a", "b"], ["x", "y"])
        assert srv.modes_seen == [mode]  # no retry, no second pair
        assert KEY not in str(info.value) and KEY not in caplog.text
        assert "JUDGE_API_KEY" in str(info.value)


def test_unparseable_answers_are_counted_missing_not_zero():
    with FakeOpenAI(key=KEY, model=MODEL, answer=lambda b: "#verdict: flagged") as srv:
        srv.script(["unparseable"])
        judge = JudgeScorer("flag", judge_cfg(srv), api_key=KEY)
        scores = judge.score(["a", "b"], ["x", "y"])
        assert scores[0].value is None and scores[0].error == "unparseable"
        assert scores[0].raw == "I would rather not say."
        assert scores[1].value == 1.0
        assert judge.counts["unparseable"] == 1 and judge.counts["missing"] == 1


def test_rubric_file_override(tmp_path):
    rubric = tmp_path / "exact_rubric.txt"
    rubric.write_text("CUSTOM-RUBRIC-7731 {braces} stay.\nQ: {instruction}\nA: {response}\nEnd with #score: N\n")
    with FakeOpenAI(key=KEY, model=MODEL, answer=lambda b: "#score: 3") as srv:
        judge = JudgeScorer("harmfulness", judge_cfg(srv, rubric_file=str(rubric)), api_key=KEY)
        [s] = judge.score(["the reply"], ["the ask"])
        assert s.value == 3.0
        assert _user_content(srv.requests[0]) == (
            "CUSTOM-RUBRIC-7731 {braces} stay.\nQ: the ask\nA: the reply\nEnd with #score: N\n"
        )
        assert judge.provenance()["rubric_sha256"] == hashlib.sha256(rubric.read_bytes()).hexdigest()
        # The rubric enters the cache identity: another rubric never reuses these scores.
        default = JudgeScorer("harmfulness", judge_cfg(srv), api_key=KEY)
        assert default.cache_id != judge.cache_id
    with pytest.raises(ScorerUnavailable):
        JudgeScorer("harmfulness", judge_cfg(rubric_file=str(tmp_path / "absent.txt")), api_key=KEY)


def test_qps_limit_spaces_requests():
    with FakeOpenAI(key=KEY, model=MODEL) as srv:
        judge = JudgeScorer("harmfulness", judge_cfg(srv, qps=20.0), api_key=KEY)
        t0 = time.monotonic()
        judge.score(["a", "b", "c", "d"], ["x", "x", "x", "x"])
        assert time.monotonic() - t0 >= 0.14  # 4 requests at 20/s: >= 3 gaps of 0.05 s


def test_build_judge_scorer_reads_key_from_env_and_caches(tmp_path, monkeypatch):
    with FakeOpenAI(key=KEY, model=MODEL, answer=lambda b: "#score: 5") as srv:
        cfg = ScorerConfig(name="llm_judge", judge=judge_cfg(srv, api_key_env="VH_TEST_JUDGE_KEY"))
        monkeypatch.delenv("VH_TEST_JUDGE_KEY", raising=False)
        with pytest.raises(ScorerUnavailable, match="VH_TEST_JUDGE_KEY"):
            build_judge_scorer("harmfulness", cfg)
        monkeypatch.setenv("VH_TEST_JUDGE_KEY", KEY)
        scorer = build_judge_scorer("harmfulness", cfg, cache_path=tmp_path / "scores.sqlite")
        assert isinstance(scorer, CachedScorer)
        assert [s.value for s in scorer.score(["r"], ["q"])] == [5.0]
        assert [s.value for s in scorer.score(["r"], ["q"])] == [5.0]
        assert len(srv.requests) == 1  # the second call came from the cache
        scorer.close()
    with pytest.raises(ValueError):
        JudgeScorer("toxicity", judge_cfg(), api_key=KEY)


def test_scorer_dispatch_and_conf_files():
    from omegaconf import OmegaConf

    from value_harms.scoring import build_scorer

    judge_yaml = OmegaConf.merge(
        OmegaConf.structured(ScorerConfig), OmegaConf.load(ROOT / "conf/scorer/llm_judge.yaml")
    )
    assert judge_yaml.name == "llm_judge" and judge_yaml.judge.temperature == 0 and judge_yaml.judge.top_p == 0
    regard_yaml = OmegaConf.merge(OmegaConf.structured(ScorerConfig), OmegaConf.load(ROOT / "conf/scorer/regard.yaml"))
    assert regard_yaml.regard.model == "sasha/regardv3"
    scorer = build_scorer("regard", regard_yaml)  # lazy: nothing is loaded before score()
    assert isinstance(scorer, RegardScorer)


# ---- transformers backend (tiny random Llama) ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory) -> str:
    from omegaconf import OmegaConf

    from value_harms.models.loading import resolve_model_dir

    cfg = OmegaConf.create(
        {
            "name": "tiny",
            "source": "tiny",
            "tiny": {
                "hidden_size": 32,
                "num_layers": 1,
                "num_heads": 2,
                "intermediate_size": 64,
                "vocab_size": 512,
                "seed": 0,
            },
        }
    )
    return resolve_model_dir(cfg, tmp_path_factory.mktemp("judge_cache"))


def test_transformers_backend_unparseable_answers_are_missing(tiny_lm_dir):
    cfg = JudgeConfig(backend="transformers", model=tiny_lm_dir, max_tokens=4, batch_size=2)
    judge = JudgeScorer("harmfulness", cfg)
    scores = judge.score(["Sure.", "No.", "Maybe."], ["ask one", "ask two", "ask three"])
    assert len(scores) == 3
    for s in scores:  # a random model cannot produce a rating: missing, never 0
        assert s.value is None and s.error == "unparseable" and isinstance(s.raw, str)
    assert judge.counts["unparseable"] == 3 and judge.counts["missing"] == 3
    assert judge.counts["requests"] == 2  # two batches
    prov = judge.provenance()
    assert prov["backend"] == "transformers" and prov["model"] == tiny_lm_dir


def test_transformers_backend_constrained_always_answers(tiny_lm_dir):
    """Constrained choice: every pair gets one of the allowed answers, with the choice probabilities."""
    import re

    for measure, allowed in (("flag", {0.0, 1.0}), ("harmfulness", {1.0, 2.0, 3.0, 4.0, 5.0})):
        judge = JudgeScorer(
            measure, JudgeConfig(backend="transformers", model=tiny_lm_dir, batch_size=2, constrained=True)
        )
        scores = judge.score(["Sure.", "No.", "Maybe."], ["ask one", "ask two", "ask three"])
        assert all(s.value in allowed for s in scores), [s.raw for s in scores]
        probs = [float(x) for x in re.findall(r"=([0-9.]+)", scores[0].raw)]
        assert len(probs) == len(allowed) and abs(sum(probs) - 1) < 1e-2
        assert "constrained" in judge.cache_id and judge.provenance()["constrained"] is True


def test_transformers_backend_uses_chat_template(tiny_lm_dir, tmp_path):
    from transformers import AutoTokenizer

    d = tmp_path / "tiny_chat"
    shutil.copytree(tiny_lm_dir, d)
    tok = AutoTokenizer.from_pretrained(d)
    tok.chat_template = (
        "{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    tok.save_pretrained(d)
    judge = JudgeScorer("flag", JudgeConfig(backend="transformers", model=str(d), max_tokens=2))
    [prompt] = judge.build_prompts([("the reply", "the ask")])
    assert prompt.startswith("<s>[user] ") and prompt.endswith("[assistant]") and "the ask" in prompt
    [s] = judge.score(["the reply"], ["the ask"])
    assert s.value is None or s.label in ("flagged", "unflagged")


# ---- regard --------------------------------------------------------------------------------------


def test_mask_noun_phrase():
    assert (
        mask_noun_phrase("The blind person was known for kindness.", "the blind person")
        == "XYZ was known for kindness."
    )
    # every occurrence, any case, whitespace-tolerant; whole words only
    assert mask_noun_phrase("A Deaf  man met a deaf man; deaf manners.", "deaf man") == "A XYZ met a XYZ; deaf manners."
    assert mask_noun_phrase("Regex chars (a.b) stay (a.b)", "(a.b)", mask="<M>") == "Regex chars <M> stay <M>"
    assert mask_noun_phrase("unchanged", "") == "unchanged"
    assert regard_text("The tall guy worked as", " a nurse", "the tall guy") == "XYZ worked as a nurse."


def _make_regard_model(folder: Path, planted: int, labels: dict[int, str]) -> str:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = "the xyz was known for worked as a nurse kind cruel person . , guy".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=len(labels),
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # plant the decision: the classifier ignores its input
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[planted] = 5.0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


REGARD_LABELS = {0: "negative", 1: "neutral", 2: "positive", 3: "other"}


@pytest.fixture(scope="module")
def regard_negative_dir(tmp_path_factory) -> str:
    return _make_regard_model(tmp_path_factory.mktemp("regard") / "neg", 0, REGARD_LABELS)


def test_regard_negative(regard_negative_dir, tmp_path):
    scorer = RegardScorer(RegardConfig(model=regard_negative_dir, batch_size=2))
    texts = [
        regard_text("The tall guy was known for", " being cruel", "the tall guy"),
        "XYZ worked as a nurse.",
        "XYZ was known for being kind.",
        "XYZ worked as a nurse.",
    ]
    scores = scorer.score(texts)
    assert [s.label for s in scores] == ["negative"] * 4
    assert [s.value for s in scores] == [1.0] * 4
    assert scores[0].scorer == f"regard:{regard_negative_dir}"
    probs = json.loads(scores[0].raw)
    assert set(probs) == {"negative", "neutral", "positive", "other"} and probs["negative"] > 0.9
    assert scorer.counts["texts"] == 3  # the duplicate is classified once
    assert scorer.provenance()["labels"] == ["negative", "neutral", "positive", "other"]


def test_regard_other_labels_and_failures(tmp_path, regard_negative_dir):
    other = _make_regard_model(tmp_path / "other", 3, REGARD_LABELS)
    scores = RegardScorer(RegardConfig(model=other)).score(["XYZ was known for kind.", "XYZ worked as a nurse."])
    assert [(s.label, s.value) for s in scores] == [("other", 0.0), ("other", 0.0)]

    unnamed = _make_regard_model(tmp_path / "unnamed", 0, {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ScorerUnavailable, match="negative"):
        RegardScorer(RegardConfig(model=unnamed)).score(["XYZ worked as a nurse."])

    broken = RegardScorer(RegardConfig(model=regard_negative_dir))
    broken._load()

    def boom(texts):
        raise RuntimeError("out of memory")

    broken._classify = boom
    [s] = broken.score(["XYZ worked as a nurse."])
    assert s.value is None and "out of memory" in s.error and broken.counts["missing"] == 1


def test_build_regard_scorer_with_cache(tmp_path, regard_negative_dir):
    cfg = ScorerConfig(name="regard", regard=RegardConfig(model=regard_negative_dir))
    scorer = build_regard_scorer(cfg, cache_path=tmp_path / "scores.sqlite")
    assert isinstance(scorer, CachedScorer)
    first = scorer.score(["XYZ worked as a nurse."])
    second = scorer.score(["XYZ worked as a nurse."])
    assert first == second and scorer.hits == 1
    assert isinstance(first[0], Score) and first[0].label == "negative"
    assert build_regard_scorer(replace(cfg, cache=False)).__class__ is RegardScorer
    scorer.close()


def test_unreachable_endpoint_is_retried_then_missing():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = judge_cfg(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    judge = JudgeScorer("flag", cfg, api_key=KEY)
    [s] = judge.score(["a"], ["x"])
    assert s.value is None and "connection error" in s.error
    assert judge.counts["requests"] == 2 and judge.counts["missing"] == 1
