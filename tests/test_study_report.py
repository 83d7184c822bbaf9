"""The study document (`python -m value_harms.study report <plan>`): generated from stored files only, on a
partial study, deterministic, and the hand-written text outside its markers kept."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from value_harms.alignment.shift import cross_separation, target_lift
from value_harms.analysis.contrasts import CONTRAST_COLUMNS
from value_harms.analysis.stats import REGRESSION_COLUMNS
from value_harms.core.values import VALUES
from value_harms.errors import ConfigError
from value_harms.tools import study as S
from value_harms.tools.study_report import MARK_END, MARK_START, merge
from value_harms.tools.study_report import write_report as _write_report

# Column lists as the analyze task writes them (outputs/demo/*/analysis/baselines.csv and mitigation.csv).
BASELINE_COLUMNS = (
    "model,benchmark,metric,category,mitigation,baseline,stage,mean,ci_low,ci_high,n,diff_vs_ref,p_value,test,"
    "n_models,n_prompts,n_prompts_used,n_prompts_seen,n_cells,cells_missing,n_samples,se,df,mde,powered,constant,"
    "method,min_models,min_prompts,diff_low,diff_high,conf,q"
).split(",")
MITIGATION_COLUMNS = (
    "model,benchmark,metric,category,baseline,stage,mitigation,disregard,mean_reference,mean_mitigated,mean_delta,"
    "ci_low,ci_high,n,p_value,test,n_models,n_prompts,n_prompts_used,n_prompts_seen,n_cells,cells_missing,"
    "n_samples,se,df,mde,powered,constant,method,min_models,min_prompts,conf,q"
).split(",")
# As `python -m value_harms.power` prints it (a table, then its notes).
POWER_OUTPUT = (
    "benchmark                metric  models  prompts  samples   mde  constant\n"
    "      rtp expected_max_toxicity      14       60        5 0.041     False\n"
    "note: the MDE treats the pilot's variance estimates (6 value-aligned models) as exact\n"
)
SECTIONS = [
    "## Design",
    "## How it ran",
    "## Value injection: alignment per model",
    "## Per-seed signal (Pow vs Uni)",
    "## Harms by model group",
    "## What the values add: contrasts",
    "## Value -> harm regressions",
    "## Mitigation deltas",
    "## Figures",
]
# A 1x1 PNG: the report copies figures byte for byte, it never draws.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360f8cfc0f01f0005"
    "0001ff5fa8a4b30000000049454e44ae426082"
)


def _plan(tmp_path: Path) -> S.Plan:
    plan = {
        "name": "mini",
        "experiment": "demo",
        "launcher": "basic",
        "output_dir": str(tmp_path / "out"),
        "document": str(tmp_path / "docs" / "STUDY-mini.md"),
        "profiles": {"two": ["Pow", "Uni"], "control": ["control/flat"]},
        "design": {"benchmark": "rtp", "metric": "expected_max_toxicity", "effect": 0.05, "alpha": 0.05, "power": 0.8},
        "stages": [
            {"name": "pilot", "script": "evaluate.py", "args": ["value_profile=vanilla,Pow", "benchmark=rtp"]},
            {"name": "power", "module": "value_harms.power", "args": ["pilot", "--models", "2", "--prompts", "4"]},
            {"name": "train", "script": "train.py", "args": ["value_profile=vanilla,{two},{control}"]},
            {"name": "signal", "script": "train.py", "args": ["value_profile={two}", "train.seed=7,13"]},
            {"name": "evaluate", "script": "evaluate.py", "args": ["value_profile=vanilla,{two}", "benchmark=rtp"]},
            {"name": "evaluate_icl", "script": "evaluate.py", "args": ["baseline=icl", "value_profile={two}"]},
            {"name": "analyze", "script": "analyze.py", "args": []},
            {"name": "report", "module": "value_harms.study", "args": ["report", "mini"]},
        ],
    }
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(plan))
    return S.load_plan(str(path))


def _scores(base: float, **raise_by: float) -> dict[str, float]:
    out = {v: round(base + 0.07 * i, 4) for i, v in enumerate(VALUES)}
    for v, d in raise_by.items():
        out[v.replace("_", "-")] += d
    return out


def _target(top: str | None) -> dict[str, float]:
    return {v: (6.0 if v == top else 1.0) if top else 3.5 for v in VALUES}


TRAINED = {  # (profile, stage, seed): (expected scores, target)
    ("vanilla", "none", 7): (_scores(3.0), None),
    ("Pow", "full", 7): (_scores(3.0, Power=1.4, Achievement=0.2), _target("Power")),
    ("Uni", "full", 7): (_scores(3.0, Universalism=0.9), _target("Universalism")),
    ("Pow", "full", 13): (_scores(3.0, Power=0.3), _target("Power")),
    ("Uni", "full", 13): (_scores(2.9, Universalism=0.8, Power=0.1), _target("Universalism")),
    ("flat", "full", 7): (_scores(3.1), _target(None)),
}


def _write_train_store(plan: S.Plan) -> None:
    for i, ((profile, stage, seed), (expected, target)) in enumerate(TRAINED.items()):
        key = f"{i:016x}"
        folder = plan.output_dir / "store" / "train" / "smollm2_135m" / stage / profile / key
        folder.mkdir(parents=True)
        kind = "vanilla" if profile == "vanilla" else "custom" if profile == "flat" else "extreme"
        record = {
            "model": "smollm2_135m",
            "profile": {"name": profile, "kind": kind, "values": target and {k.lower(): x for k, x in target.items()}},
            "seed": seed,
            "stage": stage,
            "train_key": key,
            "alignment": {"expected": expected, "target": target, "collapsed": False, "parse_rate": 0.975},
        }
        (folder / "train_result.json").write_text(json.dumps(record))


def _row(columns: list[str], **values) -> dict:
    return {c: values.get(c) for c in columns}


def _write_analysis(folder: Path) -> None:
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "baselines__rtp.png").write_bytes(PNG)
    design = dict(model="smollm2_135m", benchmark="rtp", metric="expected_max_toxicity", category="overall")
    design.update(n_prompts=4, n_samples=5, powered=False, constant=False)
    base = [
        _row(BASELINE_COLUMNS, **design, mitigation="none", baseline="vanilla", stage="none", mean=0.08, n_models=1),
        _row(
            BASELINE_COLUMNS,
            **design,
            mitigation="none",
            baseline="vim",
            stage="full",
            mean=0.1,
            ci_low=0.05,
            ci_high=0.15,
            diff_vs_ref=0.02,
            diff_low=-0.01,
            diff_high=0.05,
            p_value=0.2,
            q=0.4,
            n_models=2,
            mde=0.061,
        ),
    ]
    pd.DataFrame(base).to_csv(folder / "baselines.csv", index=False)
    con = _row(list(CONTRAST_COLUMNS) + ["q"], **design, contrast="vim_vs_control", group="vim/full")
    con.update(control="vim/full flat profile", estimate=-0.011, ci_low=-0.03, ci_high=0.008, p_value=0.3, q=0.45)
    pd.DataFrame([con]).to_csv(folder / "contrasts.csv", index=False)
    mit = _row(MITIGATION_COLUMNS, **design, baseline="vim", stage="full", mitigation="value_prompt")
    mit.update(disregard="Power+Stimulation", mean_reference=0.1, mean_mitigated=0.07, mean_delta=-0.03, n_models=2)
    pd.DataFrame([mit]).to_csv(folder / "mitigation.csv", index=False)
    reg = [
        _row(list(REGRESSION_COLUMNS) + ["q", "regressors"], **design, stage="full", term=t, coef=c, n=2)
        | {"min_profiles": 40, "regressors": "target", "p": 0.5, "q": 0.6}
        for t, c in (("Intercept", 0.1), ("Power", 0.004))
    ]
    pd.DataFrame(reg).to_csv(folder / "regressions.csv", index=False)
    family = {"method": "Benjamini-Hochberg", "alpha": 0.05, "size": 3, "by_source": {"comparison": 1}}
    (folder / "analysis.json").write_text(json.dumps({"family": family, "findings": ["one finding"]}))


def _write_record(plan: S.Plan) -> None:
    def done(start: float, wall: float) -> dict:
        return {"start": start, "end": start + wall, "rc": 0, "wall_seconds": wall, "argv": [], "why": "first run"}

    stages = {
        "pilot": {"attempts": [done(1.8e9, 60)]},
        "power": {"attempts": [done(1.8e9 + 100, 5)]},
        "train": {
            "attempts": [done(1.8e9 + 200, 300), done(1.8e9 + 600, 240)],
            "slurm_by_folder": {
                "a": {"cpu_seconds": 3600, "states": {"COMPLETED": 2}},
                "b": {"cpu_seconds": 3600, "states": {"COMPLETED": 2}},
            },
        },
        # killed with its runner (no exit), then rerun
        "signal": {"attempts": [{"start": 1.8e9 + 850, "argv": [], "why": "first run"}, done(1.8e9 + 900, 120)]},
        "evaluate": {"attempts": [done(1.8e9 + 1100, 180)]},
        "analyze": {"attempts": [done(1.8e9 + 1300, 30)]},
    }
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    plan.record_path.write_text(json.dumps({"plan": plan.name, "stages": stages, "git": ["abc123", "abc123"]}))


@pytest.fixture
def study(tmp_path) -> S.Plan:
    """A study run up to its analysis, except evaluate_icl: a record, a train store, an analysis, a power output."""
    plan = _plan(tmp_path)
    _write_record(plan)
    _write_train_store(plan)
    stages = {s.name: s for s in plan.stages}
    _write_analysis(stages["analyze"].folder(plan))
    stages["power"].folder(plan).mkdir(parents=True)
    (stages["power"].folder(plan) / "output.txt").write_text(POWER_OUTPUT)
    return plan


def write_report(plan: S.Plan) -> str:
    """As `python -m value_harms.study report` calls it: with the plan's record and stage status."""
    return _write_report(plan, S.read_record(plan), S.study_status(plan))


def _generated(text: str) -> str:
    return text[text.index(MARK_START) : text.index(MARK_END)]


def test_the_document_has_every_section_and_says_where_each_number_comes_from(study):
    summary = write_report(study)
    text = study.document.read_text()
    assert summary.startswith(str(study.document)) and "not run yet: stage evaluate_icl, 0/2 jobs" in summary
    assert [s for s in SECTIONS if s not in text] == []
    gen = _generated(text)
    for name in ("study.json", "train_result.json", "baselines.csv", "contrasts.csv", "mitigation.csv"):
        assert f"{name}" in gen and "Source" in gen, name
    assert POWER_OUTPUT.rstrip("\n") in gen and "effect 0.05" in gen  # the pilot's power verbatim, the stated effect
    assert "| train | open | 0/4 | 2 | 0,0 | 9.0 | 2.00 |" in gen  # 300 + 240 s; 7200 CPU s, two folders
    assert "| 2 | interrupted,0 | 2.0 |" in gen.split("| signal |")[1].split("\n")[0]  # 0 + 120 s
    assert "`abc123`" in gen and "python -m value_harms.study run mini" in gen
    assert "report |" not in gen.split("## How it ran")[1].split("Total")[0]  # the writing stage is left out
    assert "| vim vs control | vim/full | vim/full flat profile | rtp | expected_max_toxicity | -0.011 [" in gen
    assert "| vim vs icl | - | - | - | - | none estimated |" in gen and "not run yet: stage evaluate_icl" in gen
    assert "UNDERPOWERED (n=2 < 40 profiles)" in gen and "| Intercept |" not in gen
    assert "| rtp | expected_max_toxicity | vim/full | value_prompt | Power+Stimulation | 0.100 | 0.070 |" in gen
    # counted per training seed: the seed curve's models are not the study's
    assert "none (flat)" in gen and "per training seed: 2 of 2 at train.seed 7; 1 of 2 at train.seed 13" in gen
    copied = study.document.parent / "study-mini" / "baselines__rtp.png"
    assert copied.read_bytes() == PNG and "](study-mini/baselines__rtp.png)" in gen


def test_the_signal_table_holds_target_lift_and_cross_separation_of_the_stored_checks(study):
    write_report(study)
    gen = _generated(study.document.read_text())
    vanilla = TRAINED[("vanilla", "none", 7)][0]  # seed 13 has no vanilla of its own: the first stored one
    passes = 0
    for seed in (7, 13):
        pow_, uni = TRAINED[("Pow", "full", seed)][0], TRAINED[("Uni", "full", seed)][0]
        want = [
            target_lift(pow_, vanilla, "Power"),
            target_lift(uni, vanilla, "Universalism"),
            cross_separation(pow_, uni, "Power"),
            cross_separation(uni, pow_, "Universalism"),
        ]
        ok = all(x >= 0.5 for x in want)
        passes += ok
        row = (
            f"| smollm2_135m | full | {seed} | "
            + " | ".join(f"{x:+.2f}" for x in want)
            + f" | {'yes' if ok else 'no'} |"
        )
        assert row in gen, row
    assert passes == 1 and "smollm2_135m / full: 1 of 2 seeds pass." in gen


def test_hand_written_text_survives_and_the_same_store_gives_the_same_bytes(study):
    write_report(study)
    first = study.document.read_bytes()
    write_report(study)
    assert study.document.read_bytes() == first
    hand = first.decode().replace("Written by hand after the run.", "The values did not take hold at 2 of 4 seeds.")
    study.document.write_text("Preface by hand.\n\n" + hand)
    _write_train_store_extra(study)
    write_report(study)
    text = study.document.read_text()
    assert text.startswith("Preface by hand.\n\n# Study mini")
    assert text.endswith("## Conclusion\n\nThe values did not take hold at 2 of 4 seeds.\n")
    assert "| smollm2_135m | full | Sec | 7 | Security |" in _generated(text)  # the new result is in


def _write_train_store_extra(plan: S.Plan) -> None:
    folder = plan.output_dir / "store" / "train" / "smollm2_135m" / "full" / "Sec" / "ffffffffffffffff"
    folder.mkdir(parents=True)
    alignment = {"expected": _scores(3.0, Security=0.6), "target": _target("Security"), "collapsed": True}
    record = {"model": "smollm2_135m", "profile": {"name": "Sec", "kind": "extreme"}, "seed": 7, "stage": "full"}
    (folder / "train_result.json").write_text(json.dumps({**record, "alignment": alignment}))


def test_an_analysis_table_without_a_column_the_report_reads_is_one_line_not_a_crash(study):
    folder = next(s for s in study.stages if s.name == "analyze").folder(study)
    old = pd.read_csv(folder / "baselines.csv").drop(columns=["diff_low", "diff_high"])
    old.to_csv(folder / "baselines.csv", index=False)
    stale = study.document.parent / "study-mini" / "dropped.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(PNG)
    summary = write_report(study)
    text = study.document.read_text()
    assert "baselines.csv lacks column(s) diff_low, diff_high: rerun the analysis." in text
    assert "baselines.csv lacks column(s) diff_low, diff_high" in summary
    assert "## Mitigation deltas" in text and not stale.exists()  # the other sections still come; figures mirror


def test_an_empty_study_gives_a_document_that_says_nothing_has_run(tmp_path):
    plan = _plan(tmp_path)
    summary = write_report(plan)
    text = plan.document.read_text()
    assert "Nothing has run yet" in text and "## Conclusion\n\nWritten by hand after the run." in text
    assert [s for s in SECTIONS if s not in text] == []
    for line in (
        "not run yet: stage train, 0/4 jobs",
        "not run yet: stage signal, 0/4 jobs",
        "not run yet: stage analyze",
    ):
        assert line in text and line in summary
    assert "none recorded yet" in text and not (tmp_path / "docs" / "study-mini").exists()


def test_the_report_command_writes_the_document(study, capsys):
    assert S.main(["report", str(study.path)]) == 0
    out = capsys.readouterr().out
    assert re.match(rf"{re.escape(str(study.document))}: 9 sections; missing: ", out)
    assert study.document.is_file()


@pytest.mark.parametrize(
    "text", [f"a\n{MARK_START}\nb\n", f"{MARK_END}\n{MARK_START}\n", f"{MARK_START}{MARK_END}{MARK_START}{MARK_END}"]
)
def test_broken_markers_are_a_one_line_error_and_nothing_is_overwritten(text):
    with pytest.raises(ConfigError) as exc:
        merge(text, "generated\n", "t")
    assert "\n" not in str(exc.value) and MARK_START in str(exc.value)
