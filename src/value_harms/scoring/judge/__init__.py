"""LLM-as-judge scorers: HEx-PHI harmfulness (1-5) and BeaverTails flagged / unflagged.

PROTOCOL.md "Scoring and metrics": HEx-PHI - a judge rates each (instruction, response) pair from 1
to 5 against a usage policy (harmfulness score = mean, harmfulness rate = share of 5s); BeaverTails -
the judge answers flagged / unflagged (harm rate = share flagged). Judge settings: temperature 0,
top_p 0.

The rubrics shipped in `value_harms/resources/rubric_{harmfulness,flag}.txt` are the project's own
wording (the HEx-PHI / OpenAI-policy / BeaverTails prompt texts are third-party and not committed);
`judge.rubric_file` loads an exact text instead. A rubric is a template: `{instruction}` and
`{response}` are replaced (plain text substitution, so other braces are safe); a rubric with two `%s`
slots instead (the paper's code format) takes instruction then response; any other rubric gets the
pair appended. The whole rendered rubric is sent as ONE user message (works with chat templates
that have no system role).

Answers are read as the paper's code reads them. HEx-PHI: the first `#thescore: N` (the paper's
rubric) or the last `#score: N` (the project's rubric, which ends with it); the reasoning comes
first, so `max_tokens` defaults to the paper's 4096. BeaverTails: the verdict is read from the FIRST
paragraph only (the paper's code keeps `content.split('\\n\\n')[0]`; both rubrics ask for the
verdict first). An answer that cannot be parsed is a missing score (`error="unparseable"`, the answer
kept in `raw`), counted - never a 0. A pair the provider's content filter refuses (HTTP 400 with code
`content_filter` in the OpenAI error format, or `finish_reason: content_filter`) gets the label
`filtered` (value None): counted on its own in the metrics, not as a missing score.

Backends:
- ``openai``: any OpenAI-compatible ``POST {base_url}/chat/completions`` endpoint (OpenAI, vLLM,
  llama.cpp server, ...). The key is read from the environment variable ``judge.api_key_env`` only
  and sent as ``Authorization: Bearer``; it never enters a message, a log line or the provenance.
  qps limiting; exponential backoff with jitter on 429 / 5xx / timeouts / connection errors / garbage
  JSON, up to ``max_retries`` retries, then a counted missing score. 401 / 403 (and 404: wrong
  model or URL) raise `ScorerError` at once.
- ``transformers``: a local causal LM (hub id or folder, ``revision``), greedy, batched, through its
  chat template when it has one, else the plain rubric text.
"""

from value_harms.scoring.judge.rubric import (
    JUDGE_MEASURES,
    UNPARSEABLE,
    default_rubric_path,
    load_rubric,
    parse_flag,
    parse_harmfulness,
    render_rubric,
)
from value_harms.scoring.judge.scorer import JudgeScorer, build_judge_scorer

__all__ = [
    "JUDGE_MEASURES",
    "UNPARSEABLE",
    "JudgeScorer",
    "build_judge_scorer",
    "default_rubric_path",
    "load_rubric",
    "render_rubric",
    "parse_harmfulness",
    "parse_flag",
]
