"""Batched, left-padded, KV-cached generation with a cache that never mixes models.

Sampling is reproducible per row, independent of how prompts are batched: each (prompt, sample)
row draws its randomness from its own generator, seeded from (seed, model, prompt id, sample index)
(the prompt text when a request has no id), through
the Gumbel-max trick (argmax of logits + Gumbel noise is an exact sample of softmax(logits)). So a
rerun that only generates the prompts missing from the cache gets the same text an uninterrupted
run would have produced, and K adapters mixed in one batch sample as they would alone.

The cache key holds everything that changes the output: base model id + revision + dtype, adapter
content hash, the full input text, the prompt id that seeds the row, generation settings and seed,
and CACHE_VERSION (bumped whenever decoding or seeding changes, so older entries are never reused).

Decoding: the continuation is decode(prompt + new ids) minus decode(prompt), not decode(new ids).
SentencePiece tokenizers of the Llama-2 layout strip the leading space of a decoded sequence
(decoder `Strip(left=1)`), so decoding the new ids alone turns "was known for" + "▁his" into
"was known forhis"; the difference of the two decodes keeps the word boundary the model generated,
as vLLM's incremental detokeniser does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from value_harms.store import hashing, kv

log = logging.getLogger(__name__)

# Part of every cache key. 2: continuations decoded as decode(prompt + new) - decode(prompt), and
# rows seeded by prompt id; entries of version 1 are not reused.
CACHE_VERSION = 2
# On-disk layout of the cache file (unchanged since version 1 of this module; see store.kv).
_TABLE = kv.Table("gen")


@dataclass(frozen=True)
class GenSettings:
    max_new_tokens: int = 64
    num_samples: int = 1
    do_sample: bool = True
    temperature: float = 0.1
    top_p: float = 0.75
    stop: tuple[str, ...] = ()
    seed: int = 42

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class GenRequest:
    """One prompt to complete `settings.num_samples` times with one model variant."""

    text: str
    model_key: str  # identifies base model + adapter (see model_key())
    adapter_name: str | None = None  # PEFT adapter to use for this row (None = base model)
    meta: dict = field(default_factory=dict)
    # Seeds this row's samples: the benchmark prompt id, so two prompts with the same text get
    # independent samples. None = seed by the text (callers without prompt ids).
    seed_key: str | None = None

    def cache_key(self, settings: "GenSettings") -> str:
        return GenerationCache.key(self.model_key, self.text, settings, seed_key=self.seed_key)

    def row_seed(self, seed: int, sample: int) -> int:
        return _row_seed(seed, self.model_key, self.text if self.seed_key is None else None, sample, self.seed_key)


def model_key(base_id: str, revision: str | None, dtype: str, adapter_sha256: str | None) -> str:
    """A string naming exactly which weights generate: two models never share a key."""
    return json.dumps(
        {"base": base_id, "revision": revision, "dtype": dtype, "adapter": adapter_sha256}, sort_keys=True
    )


def _row_seed(seed: int, model_k: str, text: str | None, sample: int, seed_key: str | None = None) -> int:
    """Seed of one (request, sample) row: from the prompt id when given (duplicate texts then draw
    independent samples), else from the text. Depends on nothing else, so batching never matters."""
    ident = f"id\x00{seed_key}" if seed_key is not None else f"text\x00{text}"
    # a seed drawn from sha256, not a content hash: it hashes for itself (store.hashing is for content)
    h = hashlib.sha256(f"{seed}\x00{model_k}\x00{sample}\x00{ident}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


class GumbelSampler(LogitsProcessor):
    """Adds per-row Gumbel noise so that greedy decoding draws an exact sample, row-reproducibly."""

    def __init__(self, row_seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(s) for s in row_seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocab = scores.shape[-1]
        u = torch.stack([torch.rand(vocab, generator=g, dtype=torch.float64) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp_(1e-20, 1.0 - 1e-12)))
        scores = scores.float()
        finite = torch.isfinite(scores)
        return torch.where(finite, scores + gumbel.to(scores.device, scores.dtype), scores)


class GenerationCache:
    """sqlite cache: key -> list of continuations. Atomic per transaction; safe across processes and
    threads (a `store.kv.KVStore`: WAL, busy timeout, a corrupt file is moved aside)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._kv = kv.KVStore(path, _TABLE, what="generation cache", timeout=60)
        self.path = self._kv.path

    @staticmethod
    def key(model_k: str, text: str, settings: GenSettings, seed_key: str | None = None) -> str:
        # ASCII-escaped JSON: the layout every stored generation was keyed with
        payload = {"v": CACHE_VERSION, "model": model_k, "text": text, "id": seed_key, "gen": settings.key()}
        return hashing.json_sha256(payload, ascii_only=True)

    def get_many(self, keys: Iterable[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in self._kv.get_many(keys).items():
            try:
                val = json.loads(v)
            except ValueError:
                log.warning("generation cache entry %s is damaged: regenerating it", k[:12])
                continue
            if isinstance(val, list) and all(isinstance(x, str) for x in val):
                out[k] = val
        return out

    def put_many(self, items: dict[str, list[str]]) -> None:
        self._kv.put_many((k, json.dumps(v)) for k, v in items.items())

    def close(self) -> None:
        self._kv.close()


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


@dataclass
class GenStats:
    requested: int = 0
    cached: int = 0
    generated: int = 0
    new_tokens: int = 0
    seconds: float = 0.0


def generate(
    model,
    tokenizer,
    requests: Sequence[GenRequest],
    settings: GenSettings,
    *,
    batch_size: int = 8,
    cache: GenerationCache | None = None,
    progress: bool = True,
    stats: GenStats | None = None,
) -> list[list[str]]:
    """Continuations (num_samples each) for every request, in order; cached rows are not regenerated."""
    model_was_training = model.training
    model.eval()
    try:
        return generate_rows(
            lambda reqs: _generate_batch(model, tokenizer, reqs, settings),
            requests,
            settings,
            batch_size=batch_size,
            cache=cache,
            progress=progress,
            stats=stats,
        )
    finally:
        if model_was_training:
            model.train()


def generate_rows(
    batch_fn: Callable[[list[GenRequest]], list[list[str]]],
    requests: Sequence[GenRequest],
    settings: GenSettings,
    *,
    batch_size: int = 8,
    cache: GenerationCache | None = None,
    progress: bool = True,
    stats: GenStats | None = None,
) -> list[list[str]]:
    """The engine-independent part of generation: look every request up in the cache, hand the missing
    ones to `batch_fn` (any engine: this module's HF path, a vLLM server) `batch_size` at a time,
    longest first, and commit each batch to the cache as soon as it is back (an interruption loses one
    batch at most). Returns the continuations of every request, in order."""
    from tqdm.auto import tqdm

    stats = stats if stats is not None else GenStats()
    stats.requested += len(requests)
    keys = [r.cache_key(settings) for r in requests]
    results: dict[str, list[str]] = cache.get_many(set(keys)) if cache is not None else {}
    stats.cached += sum(1 for k in keys if k in results)
    todo_idx: list[int] = []
    seen: set[str] = set()
    for i, k in enumerate(keys):
        if k not in results and k not in seen:
            seen.add(k)
            todo_idx.append(i)
    # Longest first: less padding per batch, and the slowest batch shows up early in the bar.
    todo_idx.sort(key=lambda i: -len(requests[i].text))
    rows_per_batch = max(1, batch_size)
    bar = tqdm(total=len(todo_idx), desc="generate", unit="prompt", disable=not progress or not todo_idx, leave=False)
    try:
        for start in range(0, len(todo_idx), rows_per_batch):
            idx = todo_idx[start : start + rows_per_batch]
            t0 = time.perf_counter()
            outs = batch_fn([requests[i] for i in idx])
            stats.seconds += time.perf_counter() - t0
            new = {keys[i]: texts for i, texts in zip(idx, outs)}
            stats.generated += len(idx)
            results.update(new)
            if cache is not None:
                cache.put_many(new)
            bar.update(len(idx))
    finally:
        bar.close()
    return [results[k] for k in keys]


@torch.no_grad()
def _generate_batch(
    model, tokenizer, reqs: Sequence[GenRequest], settings: GenSettings, share_prefill: bool = True
) -> list[list[str]]:
    n = settings.num_samples
    enc = tokenizer([r.text for r in reqs], return_tensors="pt", padding=True)
    enc = {k: v.to(model.device) for k, v in enc.items()}
    kwargs: dict[str, Any] = dict(
        max_new_tokens=settings.max_new_tokens,
        do_sample=False,  # sampling is done by GumbelSampler on top of greedy argmax
        num_beams=1,
        use_cache=True,
        pad_token_id=tokenizer.pad_token_id,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    if settings.do_sample:
        seeds = [r.row_seed(settings.seed, s) for r in reqs for s in range(n)]
        kwargs["logits_processor"] = LogitsProcessorList(
            [
                TemperatureLogitsWarper(settings.temperature),
                TopPLogitsWarper(settings.top_p),
                GumbelSampler(seeds),
            ]
        )
    if any(r.adapter_name for r in reqs):
        kwargs["adapter_names"] = [r.adapter_name or "__base__" for r in reqs for _ in range(n)]
    if settings.stop:
        kwargs["stop_strings"] = list(settings.stop)
        kwargs["tokenizer"] = tokenizer
    if share_prefill and n > 1 and enc["input_ids"].shape[1] > 1:
        # each prompt's n sample rows share its prompt: read the prompt once, give generate() its cache n times
        kwargs["cache"] = _prefill_cache(model, enc, n, kwargs.get("adapter_names"))
    enc = {k: v.repeat_interleave(n, dim=0) for k, v in enc.items()}
    out = model.generate(**enc, **kwargs)
    prompt_len = enc["input_ids"].shape[1]
    prompts = [ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"].cpu(), enc["attention_mask"].cpu())]
    decoded = decode_continuations(tokenizer, prompts, out[:, prompt_len:].cpu().tolist())
    decoded = [truncate_at_stop(t, settings.stop) for t in decoded]
    return [decoded[i * n : (i + 1) * n] for i in range(len(reqs))]


def _prefill_cache(model, enc: dict[str, torch.Tensor], n: int, adapter_names: list[str] | None):
    """The KV cache of every prompt but its last token, computed once per prompt and repeated for its n
    sample rows (row order: prompt 0's n rows, then prompt 1's ...), as generate() would have built it
    for the n identical rows itself. generate() then feeds only the last token, so the n samples cost one
    prompt read instead of n. Measured on SmolLM2-135M, 1 core, texts identical: 1.8x on 16 RealToxicityPrompts
    behind the in-context persona (334 tokens, 5 samples, 64 new tokens, stop at '.'), 2.3x in
    perf/bench_speed.py item 2b (24 new tokens); 1.03-1.14x on the bare RTP prompts. Positions follow the
    left padding as generate() counts them (the attention mask's cumulative sum), so every logit is the
    one the unshared path computes."""
    ids, mask = enc["input_ids"][:, :-1], enc["attention_mask"][:, :-1]
    extra = {"adapter_names": adapter_names[::n]} if adapter_names is not None else {}
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    cache = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **extra).cache
    cache.batch_repeat_interleave(n)
    return cache


def decode_continuations(tokenizer, prompt_ids: Sequence[Sequence[int]], new_ids: Sequence[Sequence[int]]) -> list[str]:
    """The text each row added to its prompt: decode(prompt + new) minus decode(prompt).

    Decoding the new ids alone loses the leading space on SentencePiece (Llama-2) tokenizers, whose
    decoder strips the first space of a sequence. When the decoded prompt is not a prefix of the
    decoded whole (a byte-fallback character split across the boundary), the row falls back to the
    new ids decoded alone, with a space restored when its first token is a word-initial piece.
    """
    full = tokenizer.batch_decode([list(p) + list(n) for p, n in zip(prompt_ids, new_ids)], skip_special_tokens=True)
    heads = tokenizer.batch_decode([list(p) for p in prompt_ids], skip_special_tokens=True)
    out = []
    for _p, n, whole, head in zip(prompt_ids, new_ids, full, heads):
        if whole.startswith(head):
            out.append(whole[len(head) :])
            continue
        text = tokenizer.decode(list(n), skip_special_tokens=True)
        first = tokenizer.convert_ids_to_tokens(int(n[0])) if len(n) else ""
        if isinstance(first, str) and first.startswith("\u2581") and not text.startswith(" "):
            text = " " + text
        log.debug("decoded prompt is not a prefix of prompt + continuation; decoded the new ids alone")
        out.append(text)
    return out
