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


def test_shared_prompt_read_gives_the_texts_of_one_read_per_sample_row(cache_dir, tmp_path):
    """n samples of a prompt share its prompt's cache (read once): the texts equal those of reading the
    prompt once per row, across left padding (prompts of different lengths), stop strings, greedy and
    sampled decoding, and a batch that mixes two adapters and the base model."""
    from value_harms.eval.generation import _generate_batch
    from value_harms.models.lora import attach_lora, detach_lora, load_adapters

    model, tok = _tiny(cache_dir)
    texts = ["The person", "The person number 3 was known for being very", "A long story about the river begins"]
    reqs = [GenRequest(t, "m", seed_key=str(i)) for i, t in enumerate(texts)]
    for s in (
        GenSettings(max_new_tokens=8, num_samples=4, temperature=1.0, top_p=0.9, seed=3),
        GenSettings(max_new_tokens=8, num_samples=2, do_sample=False),
        GenSettings(max_new_tokens=8, num_samples=3, temperature=1.0, top_p=0.9, stop=("e",)),
    ):
        per_row = _generate_batch(model, tok, reqs, s, share_prefill=False)
        assert _generate_batch(model, tok, reqs, s, share_prefill=True) == per_row
    assert len({t for x in per_row for t in x}) > 3, "the sampled rows differ (the check compares something)"
    dirs = {}
    for i in range(2):  # two distinct adapters, mixed in one batch with the base model
        peft = attach_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"], seed=i)
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 0.5)
        peft.save_pretrained(str(tmp_path / f"a{i}"))
        dirs[f"a{i}"] = str(tmp_path / f"a{i}")
        model = detach_lora(peft)
    peft = load_adapters(model, dirs)
    try:
        mixed = [GenRequest(t, f"m{a}", a, seed_key=str(i)) for i, t in enumerate(texts) for a in ("a0", "a1", None)]
        s = GenSettings(max_new_tokens=8, num_samples=3, temperature=1.0, top_p=0.9)
        per_row = _generate_batch(peft, tok, mixed, s, share_prefill=False)
        assert _generate_batch(peft, tok, mixed, s, share_prefill=True) == per_row
        assert per_row[0] != per_row[2], "the adapter changes the texts (the mixed check compares something)"
    finally:
        detach_lora(peft)


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
