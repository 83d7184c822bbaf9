"""Generation: batching-independent seeded sampling, stop strings, and a cache that never mixes models."""

from __future__ import annotations

from omegaconf import OmegaConf

from helpers.cli import ROOT
from value_harms.eval.generation import (
    GenerationCache,
    GenRequest,
    GenSettings,
    GenStats,
    generate,
    model_key,
    truncate_at_stop,
)


def _tiny(cache_dir):
    from value_harms.models.loading import get_base_model

    return get_base_model(OmegaConf.load(ROOT / "conf/model/tiny.yaml"), str(cache_dir))


def _reqs(mk, n=5):
    return [GenRequest(text=f"The person number {i} was known for", model_key=mk) for i in range(n)]


def test_sampling_is_reproducible_and_independent_of_batching(cache_dir):
    model, tok = _tiny(cache_dir)
    s = GenSettings(max_new_tokens=6, num_samples=3, temperature=1.0, top_p=0.9, seed=7)
    a = generate(model, tok, _reqs("m"), s, batch_size=4, progress=False)
    b = generate(model, tok, _reqs("m")[::-1], s, batch_size=1, progress=False)[::-1]
    assert a == b
    assert all(len(x) == 3 for x in a)
    assert len({t for x in a for t in x}) > 5, "samples should differ at temperature 1"
    c = generate(
        model,
        tok,
        _reqs("m"),
        GenSettings(max_new_tokens=6, num_samples=3, temperature=1.0, top_p=0.9, seed=8),
        batch_size=4,
        progress=False,
    )
    assert c != a, "another seed gives other samples"


def test_greedy_matches_plain_generate(cache_dir):
    model, tok = _tiny(cache_dir)
    s = GenSettings(max_new_tokens=5, num_samples=1, do_sample=False)
    out = generate(model, tok, _reqs("m", 2), s, batch_size=2, progress=False)
    enc = tok(["The person number 0 was known for"], return_tensors="pt")
    ref = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out[0][0] == tok.decode(ref[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def test_cache_key_separates_models_and_settings(tmp_path, cache_dir):
    model, tok = _tiny(cache_dir)
    cache = GenerationCache(tmp_path / "g.sqlite")
    s = GenSettings(max_new_tokens=4, num_samples=2)
    mk_a = model_key("tiny", None, "float32", None)
    mk_b = model_key("tiny", None, "float32", "adapter-sha")
    st = GenStats()
    first = generate(model, tok, _reqs(mk_a, 3), s, cache=cache, progress=False, stats=st)
    assert (st.generated, st.cached) == (3, 0)
    st = GenStats()
    again = generate(model, tok, _reqs(mk_a, 3), s, cache=cache, progress=False, stats=st)
    assert again == first and (st.generated, st.cached) == (0, 3)
    st = GenStats()
    generate(model, tok, _reqs(mk_b, 3), s, cache=cache, progress=False, stats=st)
    assert st.generated == 3, "another adapter must never reuse the base model's outputs"
    st = GenStats()
    generate(
        model,
        tok,
        _reqs(mk_a, 3),
        GenSettings(max_new_tokens=4, num_samples=2, seed=1),
        cache=cache,
        progress=False,
        stats=st,
    )
    assert st.generated == 3, "another seed must regenerate"
    keys = {
        GenerationCache.key(mk_a, "x", s),
        GenerationCache.key(mk_b, "x", s),
        GenerationCache.key(mk_a, "y", s),
        GenerationCache.key(mk_a, "x", GenSettings(max_new_tokens=5, num_samples=2)),
    }
    assert len(keys) == 4


def test_corrupt_cache_file_is_replaced(tmp_path, caplog):
    p = tmp_path / "g.sqlite"
    p.write_bytes(b"this is not a database" * 100)
    cache = GenerationCache(p)
    cache.put_many({"k": ["a"]})
    assert cache.get_many(["k"]) == {"k": ["a"]}
    assert "damaged" in caplog.text
    assert list(tmp_path.glob("g.sqlite.corrupt-*"))


def test_truncate_at_stop():
    assert truncate_at_stop("an answer\nQUESTION: next", ["\nQUESTION:"]) == "an answer"
    assert truncate_at_stop("no stop here", ["\nQUESTION:", ""]) == "no stop here"
    assert truncate_at_stop("a. b", [".", " "]) == "a"
