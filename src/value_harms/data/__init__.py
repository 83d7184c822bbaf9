"""Data: Touché arguments, VIM training examples, benign instruction sets."""

from __future__ import annotations


class DataError(ValueError):
    """A data file or table that does not have the expected shape; the message is one line."""


# Imported after DataError: the submodules import it from here.
from value_harms.data.touche import (  # noqa: E402
    LEVEL2_TO_BASIC,
    load_arguments,
    load_touche_hub,
    load_touche_raw,
    load_value_eval_10,
)
from value_harms.data.vim import (  # noqa: E402
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
from value_harms.data.instruct import load_instruction_examples  # noqa: E402

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
