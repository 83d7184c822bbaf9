"""value-harms: how aligning an LLM to human values changes its safety.

A reimplementation of Choi et al., "Unintended Harms of Value-Aligned LLMs" (ACL 2025) as a
Hydra + Lightning + PEFT + W&B framework. See README.md for the layout and the commands.
"""

__version__ = "0.1.0"
