"""One content-hash module (store.hashing) behind every key: each key, cache key and seed keeps the exact
value the code gave before the hashing was gathered in one place (values recorded from that code for the
fixed inputs below), so no stored result, adapter, generation or cache entry is orphaned."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from value_harms.data.resumable import epoch_seed
from value_harms.eval import generation as G
from value_harms.eval.benchmarks.base import Prompt
from value_harms.models.lora import adapter_sha256
from value_harms.scoring import calibration as C
from value_harms.store import hashing, identity

PAYLOAD = {"b": "ünïcode", "a": 1, "c": [1, 2.5, None, True], "p": Path("/x/y"), "nested": {"z": 1, "y": [{"k": "v"}]}}
BIG = bytes(range(256)) * 5000  # over one 1 MiB read chunk

# Recorded from the code before store.hashing existed (commit 4830624) for the inputs below.
RECORDED = {
    "digest16": "8924f3a8102181d9",
    "digest64": "8924f3a8102181d9d7b9f8d41b41fcd79cb9e83ea73cffa932b95299d0baa957",
    "digest_cfg": "2e1892f5096d300e",
    "file_sha256": "f556b6d11c79040d7094c363cdeca31c88e4854b496c7936e207e0c9f14b6c2f",
    "big_sha256": "7d471e4af16db5a30ce10aebbc29f5178b2edbad6c7dc2e8ff8ee6e4848a726f",
    "content_folder": "c568d5675d7b0c734bd0e96333d8ffa32c999f4ecf4d82950e41e529b272f683",
    "content_folder_include": "b311db35846d361b2b534a37376d7db3263e13fe9b3004fd507845e4b9196cb3",
    "adapter": "410a08d2b2101bdad2c31b3d54ee2d3812804597d811f38009ead8f5fc145da8",
    "adapter_bad": "ffed1aeb4cd08598a6162784e2f6f7d022389cd1f0c6ade80d1c0150d170b99b",
    "cal_data": "e35ff63543dad885b9266d93b5687c0b6184f919275b1657cd20ac523b4f4dde",
    "key_prompts_sha256": "2838e9ac682ac4d01ce927c4f233eb9a73d7c1a937910ec4fcad81218bc96828",  # identity.prompts_sha256
    "prompt_set_sha256": "db7bb65caae5406e3197f7222caff1cfa73e33b867f2f12c464f687890253e0c",  # prompt_fingerprint
    "eval_key": "cb3f2e0b99e7df83",
    "eval_key_join": "12a240dbc2ce15fb",
    "row_seed_text": 8303292989993712111,
    "row_seed_id": 7182122548500231366,
    "gen_key": "a8b0b1ccd867f84cec5e51b9bd4de860fecf94fa0f07c0bd9858d9e3ce3860a5",
    "gen_key_noid": "9779254f64c6c2c6fddc0cb3699aca1030ba8651e18bb68ca485a33e55c630ba",
    "epoch_seed": [1918167304172334635, 3198510635586630580],
    "alignment_key": "dee888ac3e6b",
    # train keys of composed tiny configs (shared reference data) and the tiny base identity
    "train_pow_stage1": "823241c63a7fa273",
    "train_vanilla_benign": "b55a189171eb46b5",
    "train_close_qa": "c23ea6b719526358",
    "base_tiny": "e5d501090ee6dd85f60694b52680484a2835a5b3a8bd770f34b6a612ceff89c0",
}


@pytest.fixture
def made(tmp_path) -> dict[str, Path]:
    f = tmp_path / "items.csv"
    f.write_bytes("id,text\n1,ünïcode item\n".encode())
    big = tmp_path / "big.bin"
    big.write_bytes(BIG)
    m = tmp_path / "model"
    (m / "sub").mkdir(parents=True)
    (m / "config.json").write_text('{"hidden": 8}')
    (m / "model.safetensors").write_bytes(BIG[:5000])
    (m / "README.md").write_text("not part of the weights")
    (m / "sub" / "tokenizer.json").write_text('{"vocab": ["ä", "b"]}')
    a = tmp_path / "adapter"
    a.mkdir()
    conf = {"r": 8, "lora_alpha": 16, "base_model_name_or_path": "/c/models/tiny-x", "target_modules": ["q", "v"]}
    (a / "adapter_config.json").write_text(json.dumps(conf))
    (a / "adapter_model.safetensors").write_bytes(BIG[:777])
    (a / "README.md").write_text("ignored")
    bad = tmp_path / "adapter_bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_bytes(b'{"r": 8, trunc')
    (bad / "adapter_model.safetensors").write_bytes(b"w")
    cal = tmp_path / "cal"
    cal.mkdir()
    (cal / "nontoxic.jsonl").write_text('{"prompt": {"text": "hï", "toxicity": 0.1}}\n')
    (cal / "toxic.jsonl").write_text('{"prompt": {"text": "bad", "toxicity": 0.9}}\n')
    return {"file": f, "big": big, "model": m, "adapter": a, "adapter_bad": bad, "cal": cal}


PROMPTS = [
    Prompt("0", "The cät sat", None, {"toxicity": 0.5}),
    Prompt("hb-1", "I am a woman who", "gender", {"descriptor": "woman", "n": [1, 2]}),
    Prompt("2", "", "cat\x1e2", {}),
]
EVAL_ARGS = dict(
    model={"base": {"source": "tiny", "dtype": "float32"}, "adapter_sha256": "ab" * 32, "engine": "hf"},
    inputs=["Q: ünï\nA:", "second input", ""],
    prompts_sha="cd" * 32,
    benchmark={"name": "rtp", "version": 1, "path": "/data/rtp", "limit": 10, "reference_join": False},
    scorer={"toxicity": {"backend": "perspective", "languages": ["en"]}},
    generation_seed=42,
)


def test_payload_digests_keep_their_values():
    assert identity.digest(PAYLOAD) == hashing.digest(PAYLOAD) == RECORDED["digest16"]
    assert hashing.json_sha256(PAYLOAD) == RECORDED["digest64"]
    assert hashing.digest(OmegaConf.create({"x": "${y}", "y": 3, "s": "ä"})) == RECORDED["digest_cfg"]
    assert identity.eval_key(**EVAL_ARGS) == RECORDED["eval_key"]
    join = dict(EVAL_ARGS, benchmark={"name": "rtp", "version": 1, "reference_join": True})
    assert identity.eval_key(**join) == RECORDED["eval_key_join"]


def test_file_folder_adapter_and_data_hashes_keep_their_values(made, tmp_path):
    assert hashing.file_sha256(made["file"]) == RECORDED["file_sha256"] == identity.content_sha256(made["file"])
    assert identity.content_id(made["file"]) == RECORDED["file_sha256"][:16]
    assert hashing.file_sha256(made["big"]) == RECORDED["big_sha256"] == hashlib.sha256(BIG).hexdigest()
    assert identity.content_sha256(made["model"], tmp_path / "c") == RECORDED["content_folder"]
    include = (".json", ".safetensors")
    assert identity.content_sha256(made["model"], include=include) == RECORDED["content_folder_include"]
    assert hashing.folder_sha256(made["model"], include) == RECORDED["content_folder_include"]
    assert adapter_sha256(made["adapter"]) == RECORDED["adapter"]
    assert adapter_sha256(made["adapter_bad"]) == RECORDED["adapter_bad"]  # a damaged config hashes as its bytes
    assert C.data_sha256(C.data_files(made["cal"])) == RECORDED["cal_data"]
    # the PVQ alignment check's file name in the store (train.task)
    assert (
        identity.digest({"items": identity.content_id(made["file"]), "bs": 8, "new": 32}, 12)
        == RECORDED["alignment_key"]
    )


def test_the_two_prompt_hashes_keep_their_values_and_differ():
    """Both are stored (one in every evaluation key, one in results.json), so each keeps its own value."""
    assert identity.key_prompts_sha256(PROMPTS) == RECORDED["key_prompts_sha256"]
    assert identity.prompt_set_sha256(PROMPTS) == RECORDED["prompt_set_sha256"]
    recategorised = [Prompt(p.id, p.prompt, "other", p.meta) for p in PROMPTS]
    assert identity.prompt_set_sha256(recategorised) == RECORDED["prompt_set_sha256"]
    assert identity.key_prompts_sha256(recategorised) != RECORDED["key_prompts_sha256"]


def test_generation_keys_and_seeds_keep_their_values():
    mk = G.model_key("hf:tiny", "rev1", "float32", "ef" * 32)
    assert G._row_seed(7, mk, "héllo", 2) == RECORDED["row_seed_text"]
    assert G._row_seed(7, mk, None, 0, "id-3") == RECORDED["row_seed_id"]
    s = G.GenSettings(max_new_tokens=20, num_samples=2, stop=("\n", "ü"))
    assert G.GenerationCache.key(mk, "héllo wörld", s, "id-3") == RECORDED["gen_key"]
    assert G.GenerationCache.key(mk, "héllo wörld", G.GenSettings()) == RECORDED["gen_key_noid"]
    assert [epoch_seed(3, 5), epoch_seed(0, 0)] == RECORDED["epoch_seed"]


def test_train_keys_of_composed_configs_keep_their_values(compose, data_dir, tmp_path):
    from value_harms.core.profiles import profile_from_cfg
    from value_harms.models.identity import base_identity
    from value_harms.train import keys

    for name, over in {
        "train_pow_stage1": ["model=tiny", "value_profile=Pow"],
        "train_vanilla_benign": ["model=tiny", "value_profile=vanilla", "vim_stage=benign_alpaca"],
        "train_close_qa": ["model=tiny", "value_profile=close_Pow_3", "vim_stage=qa"],
    }.items():
        cfg = compose("train", [*over, f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp_path / name}"])
        assert keys.train_key(cfg, profile_from_cfg(cfg.value_profile), str(data_dir)) == RECORDED[name], name
    assert hashing.digest(base_identity({"source": "tiny", "name": "tiny"}), 64) == RECORDED["base_tiny"]


def test_named_files_hash_is_one_layout(made):
    """A folder, an adapter and the calibration data are one algorithm: name, NUL, bytes (and a closing byte)."""
    f = made["file"]
    data = f.read_bytes()
    assert hashing.named_files_sha256([("items.csv", f)]) == hashing.named_files_sha256([("items.csv", data)])
    assert hashing.named_files_sha256([("items.csv", data)], end=b"\x1e") == hashing.sha256_bytes(
        b"items.csv\0" + data + b"\x1e"
    )
    # moving a boundary between two records changes the hash
    assert hashing.records_sha256([b"ab", b"c"]) != hashing.records_sha256([b"a", b"bc"])
