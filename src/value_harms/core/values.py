"""Schwartz basic values and the constants of the study that name them.

Source of every constant: ../shared/docs/PROTOCOL.md, read from the paper's code
(JaehyeokLee-119/Unintended-Harms-LLM @ 4a20909) and VIM (dongjunKANG/VIM @ 034fcfa).
"""

from __future__ import annotations

# The 10 basic values, always in this (alphabetical) order, as in every table of the study.
VALUES: tuple[str, ...] = (
    "Achievement",
    "Benevolence",
    "Conformity",
    "Hedonism",
    "Power",
    "Security",
    "Self-direction",
    "Stimulation",
    "Tradition",
    "Universalism",
)

# Config-safe field names (Hydra/OmegaConf keys cannot hold '-' comfortably on the command line).
VALUE_KEYS: tuple[str, ...] = tuple(v.lower().replace("-", "_") for v in VALUES)
KEY_TO_VALUE: dict[str, str] = dict(zip(VALUE_KEYS, VALUES))
VALUE_TO_KEY: dict[str, str] = dict(zip(VALUES, VALUE_KEYS))

# Short anchor names used by the paper for the basic values, same order as VALUES.
BASIC_ANCHORS: tuple[str, ...] = ("Ach", "Ben", "Con", "Hed", "Pow", "Sec", "SD", "Sti", "Tra", "Uni")

# Higher-order groups as the paper operationalised them (Hedonism is NOT in Openness_to_Change).
HIGHER_ORDER: dict[str, tuple[str, ...]] = {
    "Openness_to_Change": ("Self-direction", "Stimulation"),
    "Self-Enhancement": ("Achievement", "Hedonism", "Power"),
    "Conservation": ("Conformity", "Security", "Tradition"),
    "Self-Transcendence": ("Benevolence", "Universalism"),
}

# The 14 anchors in the paper's order.
ANCHORS: tuple[str, ...] = BASIC_ANCHORS + tuple(HIGHER_ORDER)

# Importance scale 1..6 (6 = very important) and the answer label of score k at index k-1.
SCALE_MIN, SCALE_MAX = 1.0, 6.0
IMPORTANCE_LABELS: tuple[str, ...] = (
    "not important to me at all",
    "not important to me",
    "a little important to me",
    "somewhat important to me",
    "important to me",
    "very important to me",
)


def anchor_vector(anchor: str) -> tuple[float, ...]:
    """The extreme profile of an anchor: its value(s) at 6, every other value at 1."""
    if anchor in BASIC_ANCHORS:
        members = {VALUES[BASIC_ANCHORS.index(anchor)]}
    elif anchor in HIGHER_ORDER:
        members = set(HIGHER_ORDER[anchor])
    else:
        raise ValueError(f"unknown anchor {anchor!r}; expected one of {', '.join(ANCHORS)}")
    return tuple(SCALE_MAX if v in members else SCALE_MIN for v in VALUES)
