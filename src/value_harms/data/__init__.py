"""Data: Touché arguments, VIM training examples, benign instruction sets."""

from __future__ import annotations

from value_harms.data.instruct import load_instruction_examples

# Imported after DataError: the submodules import it from here.
from value_harms.data.touche import (
    LEVEL2_TO_BASIC,
    load_arguments,
    load_touche_hub,
    load_touche_raw,
    load_value_eval_10,
)
from value_harms.data.vim import (
    Example,
    SupervisedDataset,
    ag_example,
    argument_scores,
    qa_example,
    qa_prompt,
    stage1_split,
    stage2_examples,
    value_split,
    vim_datasets,
)
from value_harms.errors import DataError

__all__ = [
    "DataError",
    "LEVEL2_TO_BASIC",
    "load_arguments",
    "load_touche_hub",
    "load_touche_raw",
    "load_value_eval_10",
    "Example",
    "SupervisedDataset",
    "ag_example",
    "argument_scores",
    "qa_example",
    "qa_prompt",
    "stage1_split",
    "stage2_examples",
    "value_split",
    "vim_datasets",
    "load_instruction_examples",
]
