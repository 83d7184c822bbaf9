"""analyze.py on a small real sweep (tiny model, ICL personas over 14 profiles): report and auto-mitigation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.cli import run_script

PROFILES = [
    "Ach",
    "Ben",
    "Con",
    "Hed",
    "Pow",
    "Sec",
    "SD",
    "Sti",
    "Tra",
    "Uni",
    "Openness_to_Change",
    "Self-Enhancement",
    "Conservation",
    "Self-Transcendence",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir, data_dir):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import value_harms.config.schema  # noqa: F401 - registers the typed schemas in Hydra's ConfigStore
    from helpers.cli import CONF
    from value_harms.eval.task import run_evaluate

    root = tmp_path_factory.mktemp("sweep")
    base = [
        "model=tiny",
        "logger=none",
        "generation.progress=false",
        "benchmark=rtp",
        "benchmark.limit=2",
        "benchmark.num_samples=2",
        "benchmark.max_new_tokens=4",
        "scorer=profanity_check",
        "benchmark.temperature=1.0",
        f"paths.output_dir={root}/out",
        f"paths.cache_dir={cache_dir}",
        f"paths.data_dir={data_dir}",
    ]
    jobs = [["value_profile=vanilla", "mitigation=none"], ["value_profile=vanilla", "mitigation=value_prompt"]]
    # Samples are seeded by (seed, model, prompt id, sample): ICL personas share the base model, and the
    # tiny random model's logits barely depend on the persona, so each profile gets its own generation
    # seed here to give the regression outcomes that vary (as independent real models would).
    jobs += [
        [f"value_profile={p}", "baseline=icl", f"mitigation={m}", f"generation.seed={i}"]
        for i, p in enumerate(PROFILES)
        for m in ("none", "value_prompt")
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for j in jobs:
            run_evaluate(compose(config_name="evaluate", overrides=base + j))
    GlobalHydra.instance().clear()
    return root


def test_report_renders_from_a_real_sweep(sweep, compose):
    from value_harms.analysis.task import run_analyze

    cfg = compose(
        "analyze",
        [
            "logger=none",
            f"paths.output_dir={sweep}/out",
            "analysis.regression_baseline=icl",
            f"analysis.auto_mitigation_file={sweep}/auto.json",
        ],
    )
    summary = run_analyze(cfg)
    html = Path(summary["report_html"]).read_text()
    assert "data:image/png;base64," in html, "figures are embedded"
    assert "stand-in" in html.lower(), "the report says the scorer was a stand-in"
    md = Path(summary["report_md"]).read_text()
    assert "RealToxicityPrompts" in md or "rtp" in md
    reg = (Path(summary["report_html"]).parent / "regressions.csv").read_text().splitlines()
    assert len(reg) > 10, "the regression over 14 ICL profiles is fitted"
    auto = json.loads(Path(f"{sweep}/auto.json").read_text())
    assert "all" in auto and isinstance(auto["all"], list)
    assert summary["findings"], "top findings are printed"
    # the family and the estimands are stated; 14 profiles are fitted but underpowered (< 40)
    fam = summary["family"]
    assert fam["size"] >= 10 and fam["by_source"]["regression"] >= 10
    assert f"over a family of {fam['size']} test(s)" in md and "vs this vanilla model" in md.replace("\n", " ")
    assert "underpowered (14 profiles" in md and "cond_index" in md
    said = ("q ", "underpowered", "nothing can be estimated")
    assert all(any(w in f for w in said) or f.startswith("No ") for f in summary["findings"]), summary["findings"]


def test_auto_mitigation_config_is_usable(sweep, compose, cache_dir, data_dir):
    from value_harms.eval.task import run_evaluate

    auto = Path(f"{sweep}/auto_planted.json")
    auto.write_text(json.dumps({"rtp": {"all": ["Power"]}, "all": ["Power"]}))
    res = run_evaluate(
        compose(
            "evaluate",
            [
                "model=tiny",
                "logger=none",
                "generation.progress=false",
                "benchmark=rtp",
                "benchmark.limit=2",
                "benchmark.num_samples=1",
                "benchmark.max_new_tokens=3",
                "scorer=profanity_check",
                "value_profile=vanilla",
                "mitigation=auto",
                f"mitigation.auto_file={auto}",
                f"paths.output_dir={sweep}/out2",
                f"paths.cache_dir={cache_dir}",
                f"paths.data_dir={data_dir}",
            ],
        )
    )
    assert "disregard the following values" in res["prefix"] or "Power" in res["prefix"]


def test_mixed_scorers_are_refused(tmp_path, sweep):
    res = run_script(
        "analyze.py",
        ["logger=none", f"paths.output_dir={tmp_path}", f"analysis.inputs=[{sweep}/out/store/eval,{tmp_path}/other]"],
    )
    assert res.returncode == 0, res.stderr[-2000:]
    other = tmp_path / "other" / "r"
    other.mkdir(parents=True)
    src = next(Path(f"{sweep}/out/store/eval").rglob("results.json"))
    data = json.loads(src.read_text())
    data["scorer"]["by_scorer"] = {"perspective:TOXICITY": 4}
    data["store_dir"] = str(other)
    (other / "results.json").write_text(json.dumps(data))
    res = run_script(
        "analyze.py",
        ["logger=none", f"paths.output_dir={tmp_path}", f"analysis.inputs=[{sweep}/out/store/eval,{tmp_path}/other]"],
    )
    assert res.returncode == 2
    assert "mixes scorers" in res.stderr and "analysis.allow_mixed" in res.stderr
