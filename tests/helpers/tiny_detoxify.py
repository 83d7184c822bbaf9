"""Build a small random BERT checkpoint in Detoxify's format, fully offline.

Detoxify 0.5.4 (`detoxify/detoxify.py`, `load_checkpoint`) reads `checkpoint["config"]`:
  arch.args    = {model_type, model_name, tokenizer_name, num_classes} -> get_model_and_tokenizer
  dataset.args = {classes}  (Jigsaw names; "toxic" is renamed "toxicity")
and `checkpoint["state_dict"]` (the HF model's state dict). With an explicit checkpoint, the
`model_type` that matters is the one in arch.args (Detoxify's own `model_type` argument is ignored),
and it is always passed to `config_class.from_pretrained`: here it is the local config folder, so
nothing touches the hub.

`planted_bias` sets the classifier bias and zeroes its weights, so every text gets
sigmoid(bias[i]) for class i (exact, predictable scores). Without it the weights are random (seeded):
scores then vary a little from text to text, enough to check that batching changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

# The 6 outputs of Detoxify "original" (Jigsaw Toxic Comment Classification Challenge).
ORIGINAL_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]

WORDS = (
    "the a an you are is i am we they it this that and or not to of in on for with be have "
    "good nice kind friend love thank hello world day people idiot stupid dumb hate bad ugly "
    "fool loser awful terrible"
).split()


def build_tiny_detoxify(
    folder: str | Path,
    *,
    classes: Sequence[str] = ORIGINAL_CLASSES,
    hidden_size: int = 32,
    num_layers: int = 2,
    planted_bias: Sequence[float] | None = None,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write `<folder>/hf` (config.json, vocab.txt, tokenizer_config.json) and
    `<folder>/tiny_detoxify.ckpt`; returns (checkpoint_path, hf_dir)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = Path(folder)
    hf = folder / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ".", ",", "!", "?"]
    (hf / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    max_pos = 64
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_pos,
        num_labels=len(classes),  # must already be right: Detoxify passes this folder as config
        problem_type="multi_label_classification",
    )
    config.save_pretrained(hf)
    (hf / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "model_max_length": max_pos}), encoding="utf-8"
    )

    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        if planted_bias is not None:
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(list(planted_bias), dtype=torch.float32))
    ckpt = {
        "config": {
            "arch": {
                "args": {
                    "model_type": str(hf),  # a local folder: no hub lookup (see module doc)
                    "model_name": "BertForSequenceClassification",
                    "tokenizer_name": "BertTokenizer",
                    "num_classes": len(classes),
                }
            },
            "dataset": {"args": {"classes": list(classes)}},
        },
        "state_dict": model.state_dict(),
    }
    path = folder / "tiny_detoxify.ckpt"
    torch.save(ckpt, path)
    return path, hf
