"""One name rule for text made into a name (core.names.slug): the W&B artifact names and the report's
figure files and anchors keep the names they had for every input the project gives them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from value_harms.core.names import slug
from value_harms.runtime.tracking import artifact_safe_name

CONF = Path(__file__).resolve().parents[1] / "conf"


def _old_artifact_safe_name(text: str) -> str:  # runtime.tracking before the rule moved to core.names
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def _old_slug(text: str) -> str:  # analysis.report.format before the rule moved to core.names
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def _config_names(group: str) -> list[str]:
    return [str(yaml.safe_load(p.read_text()).get("name", p.stem)) for p in sorted((CONF / group).glob("*.yaml"))]


def test_artifact_names_are_unchanged_for_every_shipped_config():
    names = 0
    for model in _config_names("model"):
        for profile in _config_names("value_profile"):
            for stage in [*_config_names("vim_stage"), "none"]:
                text = f"adapter-{model}-{profile}-{stage}-s42"  # train.task.run_name
                assert artifact_safe_name(text) == _old_artifact_safe_name(text) == slug(text, "-")
                names += 1
    assert names > 1000


def test_report_slugs_are_unchanged():
    texts = [
        "toxicity/expected_max_toxicity",
        "regard/negative_rate",
        "holisticbiasr",
        "Value regressions (FDR q <= 0.05)",
        "  what the values add: VIM vs ICL  ",
        "",
        "///",
        "über-größe",
        "a.b-c_d",
    ]
    for t in texts:
        assert _old_slug(t) == slug(t), t


def test_where_the_artifact_rule_differs():
    """Only text outside ASCII letters, digits and `-_.` is named differently now: runs become one '-'
    and non-ASCII letters (which W&B rejects in artifact names) are replaced."""
    assert (
        artifact_safe_name("adapter-a +b") == "adapter-a-b" != _old_artifact_safe_name("adapter-a +b") == "adapter-a--b"
    )
    assert artifact_safe_name("adapter-größe") == "adapter-gr-e"
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", artifact_safe_name("adapter-größe"))
