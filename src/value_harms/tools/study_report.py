"""`python -m value_harms.study report <plan>`: the study document, generated from the study's stored files.

Reads only what the study wrote (never a model, never a recomputation of an estimate):
- the runner's record (`<output_dir>/study/study.json`) and each stage's sweep state (study.study_status):
  how it ran, per stage and in total, and the git commit(s);
- the training results of the store (`<output_dir>/store/train/**/train_result.json`): the alignment table
  (target lift vs the vanilla model, Spearman vs the target, verdict) and the per-seed signal table of
  the Pow / Uni pair (target lift and cross separation, alignment.shift, as scripts/cpu_study_curve.py);
- the final analysis (the last analyze.py stage's folder): baselines.csv, contrasts.csv, regressions.csv,
  mitigation.csv, injection.csv, analysis.json and figures/*.png (copied beside the document);
- the pilot's power output (the `power` stage's output.txt, its stdout), quoted verbatim with the plan's `design`.

The generated part sits between two markers; text outside them (the hand-written conclusion) is kept.
Every section says where its numbers come from, and what has not run yet instead of failing, so the
document works on a partial study. Same store -> byte-identical document: no clock is read, the only
times are the record's, printed in UTC.

The caller (tools/study.py, `report`) hands over the plan, its record and its stage status, so that this
module never imports the runner back (no import cycle); a plan is read here through its attributes only.
"""

# size: one generated document, one function per section; the sections share the Study context and the
# table helpers, and splitting them apart would make those helpers public for one caller

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.errors import HydraException

from value_harms.alignment.shift import SEPARATION_GOAL, cross_separation, spearman_vs_target, target_lift, top_values
from value_harms.analysis.injection import item_scores, lift_interval, verdict
from value_harms.analysis.multiplicity import family_text
from value_harms.config.access import cfg_get
from value_harms.config.paths import CONF_DIR
from value_harms.config.sweep import expand_overrides
from value_harms.errors import ConfigError
from value_harms.store import files

__all__ = ["MARK_START", "MARK_END", "SIGNAL_PAIR", "render", "merge", "write_report"]

ROOT = CONF_DIR.parent  # the repository: paths inside it are printed relative to it
MARK_START = "<!-- generated:start -->"
MARK_END = "<!-- generated:end -->"
# The per-seed signal pair: each profile and the one value its target raises (the cpu_study pair).
SIGNAL_PAIR = {"Pow": "Power", "Uni": "Universalism"}
# Which stages each section's numbers need (by the plan's stage names; names a plan lacks are ignored).
NEEDS = {
    "design": ("pilot_vanilla", "pilot", "power"),
    "alignment": ("train",),
    "signal": ("signal",),
    "harms": ("evaluate", "analyze"),
    "contrasts": ("evaluate", "evaluate_icl", "analyze"),
    "regressions": ("evaluate", "analyze"),
    "mitigations": ("evaluate", "analyze_auto", "evaluate_auto", "analyze"),
}


# ---------------------------------------------------------------------------------- formatting
def _num(x: Any, nd: int = 3, sign: bool = False) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if not math.isfinite(v) else f"{v:+.{nd}f}" if sign else f"{v:.{nd}f}"


def _ci(mean: Any, lo: Any, hi: Any, sign: bool = False) -> str:
    body = _num(mean, sign=sign)
    return body if _num(lo) == "-" else f"{body} [{_num(lo, sign=sign)}, {_num(hi, sign=sign)}]"


def _int(x: Any) -> str:
    try:
        return str(int(float(x)))
    except (TypeError, ValueError, OverflowError):
        return "-"


def _flag(x: Any) -> bool:
    return str(x).strip().lower() in ("true", "1", "1.0")


def _table(headers: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _rel(path: Path) -> str:
    """A path as the document prints it: relative to the repository when inside it."""
    try:
        return str(Path(path).relative_to(ROOT))
    except ValueError:
        return str(path)


def _utc(t: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(t))) if isinstance(t, (int, float)) else "-"


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------- stages
class Study:
    """What the sections share: the plan, its record, each stage's state and what is missing."""

    def __init__(self, plan: Any, record: dict[str, Any], status: list[dict[str, Any]]):
        self.plan = plan
        self.record = record
        self.rows = {r["stage"]: r for r in status}
        self.missing: list[str] = []
        self._jobs: dict[str, int | None] = {}
        # the stage that writes this document is mid-run while it does: its row would change every time
        self.stages = [s for s in plan.stages if not (s.module == "value_harms.study" and s.args[:1] == ["report"])]
        finals = [s for s in plan.stages if s.name == "analyze"] or [s for s in plan.stages if s.script == "analyze.py"]
        self.analysis = finals[-1].folder(plan) if finals else None

    def stage(self, name: str) -> Any:
        return next((s for s in self.plan.stages if s.name == name), None)

    def expected_jobs(self, stage: Any) -> int | None:
        """Jobs of a multirun stage: from its sweep when started, else its command expanded as Hydra does."""
        row = self.rows[stage.name]
        if row.get("expected") is not None or not stage.multirun:
            return row.get("expected")
        if stage.name not in self._jobs:
            try:
                self._jobs[stage.name] = len(expand_overrides(stage.argv(self.plan)[3:]))
            except (HydraException, ValueError):
                self._jobs[stage.name] = None
        return self._jobs[stage.name]

    def pending(self, section: str) -> list[str]:
        """One line per stage the section needs that is not done ("not run yet: stage X, 0/28 jobs")."""
        out = []
        for name in NEEDS.get(section, ()):
            stage, row = self.stage(name), self.rows.get(name)
            if stage is None or row is None or row["state"] == "done":
                continue
            word = "not run yet" if row["state"] == "not started" else f"not finished ({row['state']})"
            jobs = self.expected_jobs(stage) if stage.multirun else None
            line = f"{word}: stage {name}" + (f", {row.get('done') or 0}/{jobs} jobs" if jobs is not None else "")
            out.append(line)
            if line not in self.missing:
                self.missing.append(line)
        return out

    def analysis_file(self, name: str) -> Path | None:
        return self.analysis / name if self.analysis is not None else None

    def analysed(self) -> bool:
        f = self.analysis_file("analysis.json")
        return f is not None and f.is_file()

    def info(self) -> dict[str, Any]:
        """The analysis summary (analysis.json); {} when absent or unreadable."""
        try:
            data = files.read_json(self.analysis_file("analysis.json"))
        except (OSError, ValueError, TypeError):
            return {}
        return data if isinstance(data, dict) else {}


def _head(study: Study, section: str, title: str) -> list[str]:
    lines = [f"## {title}", ""]
    pend = study.pending(section)
    return lines + ([f"- {p}" for p in pend] + [""] if pend else [])


def _no_analysis(study: Study) -> list[str]:
    where = _rel(study.analysis) if study.analysis is not None else "(the plan has no analyze.py stage)"
    return [f"No analysis yet: `{where}` holds no analysis.json.", ""]


def _source(path: Path, what: str = "", glob: str = "") -> str:
    return f"Source: `{_rel(path)}{glob}`{what}."


def _seed_key(seed: Any) -> tuple:
    """Seeds in numeric order (7 before 13), anything else after them."""
    return (0, seed, "") if isinstance(seed, int) and not isinstance(seed, bool) else (1, 0, str(seed))


# ---------------------------------------------------------------------------------- design
def section_design(study: Study) -> list[str]:
    plan = study.plan
    lines = _head(study, "design", "Design")
    lines.append(f"Plan `{_rel(plan.path) if plan.path else plan.name}`: experiment `{plan.experiment}`, launcher ")
    lines[-1] += f"`{plan.launcher}`, store `{_rel(plan.output_dir)}`."
    lines += ["", *[f"- {k}: {len(v)} profile(s) ({', '.join(v)})" for k, v in plan.profiles.items()]]
    jobs = [(s.name, study.expected_jobs(s)) for s in plan.stages if s.multirun]
    lines += ["- jobs per stage: " + ", ".join(f"{n} {_int(j)}" for n, j in jobs), ""]
    design = getattr(plan, "design", None) or {}
    keys = ("metric", "benchmark", "effect", "alpha", "power", "note")
    if design:
        stated = ", ".join(f"{k} {cfg_get(design, k)}" for k in keys[:-1] if cfg_get(design, k) is not None)
        lines += [f"Pre-stated effect (the plan's `design`): {stated}."]
        lines += [f"Note: {cfg_get(design, 'note')}"] if cfg_get(design, "note") else []
        lines += [""] + _achieved(study, design)
    else:
        lines += ["The plan states no effect (no `design` mapping).", ""]
        study.missing.append("design")
    power = study.stage("power")
    txt = power.folder(plan) / "output.txt" if power else None  # a module stage's stdout (study.run_stage)
    if txt is not None and txt.is_file():
        lines += [f"The pilot's power, verbatim ({_source(txt)[:-1]}):", "", "```"]
        lines += [txt.read_text(encoding="utf-8").rstrip("\n"), "```", ""]
    else:
        lines += ["The pilot's power: " + ("the plan has no `power` stage." if power is None else "no output yet.")]
        lines.append("")
        study.missing.append("power output")
    return lines


def _detects(mde: Any, effect: Any) -> str:
    """Whether the achieved design detects the pre-stated effect (MDE at the analysis' 80% power <= effect)."""
    m, e = _num(mde), _num(effect)
    return "-" if "-" in (m, e) else "yes" if float(mde) <= float(effect) else "no"


def _achieved(study: Study, design: Any) -> list[str]:
    """The study's own design and MDE on the pre-stated metric (vim vs vanilla, no mitigation)."""
    f = study.analysis_file("baselines.csv")
    df, why = read_table(study, "baselines.csv")
    if df is None:
        return [f"Achieved design: {why or 'no baselines.csv yet'}.", ""]
    sel = df[
        (df["benchmark"] == cfg_get(design, "benchmark"))
        & (df["metric"] == cfg_get(design, "metric"))
        & (df["category"] == "overall")
        & (df["mitigation"] == "none")
        & (df["baseline"] == "vim")
    ]
    if sel.empty:
        return ["Achieved design: baselines.csv has no vim row for the pre-stated metric.", ""]
    rows = [
        [str(r.stage), f"{_int(r.n_models)} x {_int(r.n_prompts)} x {_int(r.n_samples)}", _num(r.mde), str(r.powered)]
        + [_detects(r.mde, cfg_get(design, "effect"))]
        for r in sel.sort_values("stage").itertuples()
    ]
    head = ["VIM stage", "models x prompts x samples", "MDE vs vanilla", "powered", "MDE <= pre-stated effect"]
    return ["Achieved design on that metric:", "", _table(head, rows), "", _source(f), ""]


# ---------------------------------------------------------------------------------- how it ran
def _exit(attempt: dict[str, Any], last: bool) -> str:
    """An attempt's exit status. One without any is running if it is the stage's last, else it was killed: a
    later attempt started, and one runner at a time holds the study (the next runner records it as such)."""
    if attempt.get("interrupted") or ("rc" not in attempt and not last):
        return "interrupted"
    return str(attempt["rc"]) if "rc" in attempt else "running"


def section_runs(study: Study) -> list[str]:
    plan, record = study.plan, study.record
    lines = ["## How it ran", ""]
    rows, wall, cpu = [], 0.0, 0.0
    for stage in study.stages:
        r, rec = study.rows[stage.name], record.get("stages", {}).get(stage.name, {})
        att = rec.get("attempts") or []
        jobs = f"{r.get('done') or 0}/{_int(study.expected_jobs(stage))}" if stage.multirun else "single run"
        states = r.get("slurm_states") or {}
        rows.append(
            [
                stage.name,
                r["state"],
                jobs,
                str(len(att)),
                ",".join(_exit(a, last=i == len(att) - 1) for i, a in enumerate(att)) or "-",
                f"{r['wall_seconds'] / 60:.1f}",
                _num(r.get("cpu_hours"), 2),
                ", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "-",
                _utc(att[0].get("start")) if att else "-",
                _utc(att[-1].get("end")) if att else "-",
            ]
        )
        wall += r["wall_seconds"]
        cpu += r.get("cpu_hours") or 0.0
    head = ["stage", "state", "jobs done/expected", "attempts", "exit", "wall min", "CPU h", "SLURM", "first start"]
    lines += [_table([*head, "last end"], rows), ""]
    if len(study.stages) < len(plan.stages):
        lines += ["The stage that writes this document is left out (it is running while it writes).", ""]
    lines += [f"Total: {wall / 60:.1f} wall minutes, {cpu:.2f} CPU hours (SLURM accounting, where recorded).", ""]
    lines += [_source(plan.record_path, " and each stage's sweep folder (`python -m value_harms.study status`)"), ""]
    commits = list(dict.fromkeys(c for c in record.get("git") or [] if c))
    lines += [f"Git commit(s) of the runs: {', '.join(f'`{c}`' for c in commits) or 'none recorded yet'}.", ""]
    lines += ["The study's commands (the runner adds each stage's sweep folder):", "", "```"]
    lines += [f"python -m value_harms.study run {plan.name}", f"python -m value_harms.study report {plan.name}"]
    for stage in plan.stages:
        rec = record.get("stages", {}).get(stage.name, {})
        lines.append(rec.get("command") or " ".join(stage.argv(plan)))
    return lines + ["```", ""]


# ---------------------------------------------------------------------------------- alignment
def train_checks(plan: Any) -> list[dict[str, Any]]:
    """One dict per stored training result with an alignment check: model, stage, profile, kind, seed, key,
    expected and target scores, collapsed, path; sorted by model, stage, profile, seed, key."""
    out = []
    for f in sorted((plan.output_dir / "store" / "train").rglob("train_result.json")):
        try:
            data = files.read_json(f)
        except (OSError, ValueError):
            continue
        al, prof = data.get("alignment"), data.get("profile") or {}
        if not isinstance(al, dict) or not isinstance(al.get("expected"), dict):
            continue
        model = data.get("model")
        out.append(
            {
                "model": str(model.get("name") if isinstance(model, dict) else model),
                "stage": str(data.get("stage") or "none"),
                "profile": str(prof.get("name")),
                "vanilla": prof.get("kind") == "vanilla" or data.get("stage") == "none",
                "seed": data.get("seed"),
                "key": str(data.get("train_key") or f.parent.name),
                "expected": al["expected"],
                "target": al.get("target") or prof.get("values"),
                "collapsed": al.get("collapsed"),
                "items": item_scores(al.get("rows")),
            }
        )
    return sorted(out, key=lambda c: (c["model"], c["stage"], c["profile"], _seed_key(c["seed"]), c["key"]))


def _vanilla_for(checks: list[dict[str, Any]], model: str, seed: Any) -> dict[str, Any] | None:
    """The vanilla check of the same base model: of the same seed where stored, else the first by key."""
    van = [c for c in checks if c["vanilla"] and c["model"] == model]
    return next((c for c in van if c["seed"] == seed), van[0] if van else None)


def section_alignment(study: Study, checks: list[dict[str, Any]]) -> list[str]:
    lines = _head(study, "alignment", "Value injection: alignment per model")
    if not checks:
        study.missing.append("train results")
        return lines + [
            f"No training result with an alignment check under `{_rel(study.plan.output_dir)}/store/train`.",
            "",
        ]
    rows, per_seed = [], {}  # seed -> [took hold, value-aligned]
    for c in checks:
        van = _vanilla_for(checks, c["model"], c["seed"])
        tops = [] if c["vanilla"] else top_values(c["target"])
        lifts = [target_lift(c["expected"], van["expected"], v) for v in tops] if van else []
        lift = sum(lifts) / len(lifts) if lifts and None not in lifts else None
        ci = lift_interval(c["items"], van["items"], tops) if van and lift is not None else None
        low, high = ci if ci is not None else (None, None)
        rho = spearman_vs_target(c["expected"], c["target"]) if c["target"] else None
        rho_v = spearman_vs_target(van["expected"], c["target"]) if van and c["target"] else None
        gain = rho - rho_v if rho is not None and rho_v is not None else None
        word = "reference" if c["vanilla"] else verdict(lift, low, high) if tops else "no target value (flat profile)"
        if tops:
            n = per_seed.setdefault(c["seed"], [0, 0])
            n[0], n[1] = n[0] + (word == "took hold"), n[1] + 1
        target = "-" if c["vanilla"] else ", ".join(tops) or "none (flat)"
        interval = f"[{_num(low, 2, True)}, {_num(high, 2, True)}]" if ci is not None else "-"
        row = [c["model"], c["stage"], c["profile"], _int(c["seed"]), target, _num(lift, 2, True), interval]
        row.append(_num(rho, 2))
        rows.append([*row, _num(gain, 2, True), str(c["collapsed"]), word])
    head = ["model", "stage", "profile", "seed", "target value(s)", "target lift", "95% interval", "Spearman"]
    head.append("Spearman gain")
    lines += [_table([*head, "collapsed", "verdict"], rows), ""]
    # per training seed: the study's models share one seed; the seed curve adds models at other seeds
    seeds = sorted(per_seed, key=lambda k: (-per_seed[k][1], _seed_key(k)))
    counts = "; ".join(f"{per_seed[k][0]} of {per_seed[k][1]} at train.seed {_int(k)}" for k in seeds)
    lines += [
        f"Value-aligned models that took hold, per training seed: {counts or 'none'} (target lift >= "
        f"{SEPARATION_GOAL} PVQ points over the vanilla model of the same seed, else the first stored one, with its "
        "95% interval above 0). Target lift: the "
        "expected PVQ score of the target value minus the other nine's mean, minus the same for the vanilla model "
        "(alignment.shift). Its interval: bootstrap over the 40 PVQ items, paired by item with the vanilla model; "
        "it holds the uncertainty of measuring values on 3-6 items per value, not the training seed's (the "
        "per-seed table). Verdicts: took hold, partly (interval above 0, lift < 0.5), cannot tell (interval "
        "straddles 0), did not (interval at or below 0) (analysis.injection.verdict).",
        "",
        _source(study.plan.output_dir / "store" / "train", f" ({len(checks)} results)", "/**/train_result.json"),
        "",
    ]
    return lines + _injection(study)


def _injection(study: Study) -> list[str]:
    f = study.analysis_file("injection.csv")
    df = _read_csv(f) if f is not None and f.is_file() else None
    if df is None:
        return ["The analysis wrote no injection.csv: its injection table is not part of this analysis.", ""]
    cols = [c for c in ("profile", "stage", "target_lift", "spearman_gain", "verdict") if c in df]
    rows = [[_num(v, 2, True) if isinstance(v, float) else str(v) for v in r] for r in df[cols].itertuples(index=False)]
    return [
        "As the analysis read it (the evaluated models' training keys):",
        "",
        _table(cols, rows),
        "",
        _source(f),
        "",
    ]


def signal_rows(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, VIM stage, seed) with both SIGNAL_PAIR profiles: lift of each on its value, the cross
    separation on each value, and whether all four reach SEPARATION_GOAL."""
    (a, va), (b, vb) = SIGNAL_PAIR.items()
    by: dict[tuple, dict[str, dict[str, Any]]] = {}
    for c in checks:
        if not c["vanilla"] and c["profile"] in SIGNAL_PAIR:
            by.setdefault((c["model"], c["stage"], c["seed"]), {}).setdefault(c["profile"], c)
    out = []
    for (model, stage, seed), pair in sorted(by.items(), key=lambda kv: (*kv[0][:2], _seed_key(kv[0][2]))):
        van = _vanilla_for(checks, model, seed)
        if a not in pair or b not in pair or van is None:
            continue
        ea, eb, ev = pair[a]["expected"], pair[b]["expected"], van["expected"]
        m = {"model": model, "stage": stage, "seed": seed}
        m.update(lift_a=target_lift(ea, ev, va), lift_b=target_lift(eb, ev, vb))
        m.update(sep_a=cross_separation(ea, eb, va), sep_b=cross_separation(eb, ea, vb))
        vals = [m["lift_a"], m["lift_b"], m["sep_a"], m["sep_b"]]
        m["passes"] = all(x is not None and x >= SEPARATION_GOAL for x in vals)
        out.append(m)
    return out


def section_signal(study: Study, checks: list[dict[str, Any]]) -> list[str]:
    (a, va), (b, vb) = SIGNAL_PAIR.items()
    lines = _head(study, "signal", f"Per-seed signal ({a} vs {b})")
    rows = signal_rows(checks)
    if not rows:
        study.missing.append("signal")
        return lines + [f"No seed has both a {a} and a {b} training result with a vanilla check yet.", ""]
    head = ["model", "stage", "train.seed", f"lift {a}", f"lift {b}", f"sep {a}", f"sep {b}"]
    body = [
        [r["model"], r["stage"], _int(r["seed"])]
        + [_num(r[k], 2, True) for k in ("lift_a", "lift_b", "sep_a", "sep_b")]
        + ["yes" if r["passes"] else "no"]
        for r in rows
    ]
    lines += [_table([*head, f"all four >= {SEPARATION_GOAL}"], body), ""]
    for (model, stage), n in sorted(pd.Series([(r["model"], r["stage"]) for r in rows]).value_counts().items()):
        k = sum(r["passes"] for r in rows if (r["model"], r["stage"]) == (model, stage))
        lines.append(f"- {model} / {stage}: {k} of {n} seeds pass.")
    lines += [
        "",
        f"lift {a}: target lift of the {a} model on {va}; sep {a}: e_{a}[{va}] - e_{b}[{va}] (expected PVQ "
        f"scores; likewise for {b} on {vb}); alignment.shift, as scripts/cpu_study_curve.py.",
        "",
        _source(study.plan.output_dir / "store" / "train", glob="/**/train_result.json"),
        "",
    ]
    return lines


# ---------------------------------------------------------------------------------- analysis tables
# The columns each section reads, as analysis/task.py writes them (others are read where present).
COLUMNS = {
    "baselines.csv": ("benchmark", "metric", "category", "mitigation", "baseline", "stage", "mean", "ci_low")
    + ("ci_high", "diff_vs_ref", "diff_low", "diff_high", "p_value", "n_samples", "mde", "powered", "constant"),
    "contrasts.csv": ("contrast", "group", "control", "benchmark", "metric", "estimate", "ci_low", "ci_high")
    + ("p_value", "mde", "powered"),
    "regressions.csv": ("benchmark", "metric", "stage", "term", "coef", "ci_low", "ci_high", "p", "p_adj", "n")
    + ("mde", "powered", "min_profiles"),
    "mitigation.csv": ("benchmark", "metric", "category", "baseline", "stage", "mitigation", "disregard")
    + ("mean_reference", "mean_mitigated", "mean_delta", "ci_low", "ci_high", "p_value", "mde", "powered"),
}


def read_table(study: Study, name: str) -> tuple[pd.DataFrame | None, str]:
    """An analysis CSV with the columns the report reads, or None and why not ("" when it is not written)."""
    f = study.analysis_file(name)
    df = _read_csv(f) if f is not None and f.is_file() else None
    if df is None or df.empty:
        return None, ""
    lacks = [c for c in COLUMNS.get(name, ()) if c not in df]
    return (None, f"{name} lacks column(s) {', '.join(lacks)}: rerun the analysis") if lacks else (df, "")


def _analysis_csv(study: Study, name: str, lines: list[str], absent: str) -> pd.DataFrame | None:
    """The analysis CSV `name`, or None with a line saying why in `lines`."""
    if not study.analysed():
        lines += _no_analysis(study)
        return None
    df, why = read_table(study, name)
    if df is None:
        lines += [f"{why}." if why else f"The analysis wrote no {name}: {absent}.", ""]
        study.missing.append(why or name)
    return df


def _group(r: Any) -> str:
    return "vanilla" if r.baseline == "vanilla" else f"{r.baseline}/{r.stage}"


def _design_cell(r: Any) -> str:
    return f"{_int(getattr(r, 'n_models', None))} x {_int(getattr(r, 'n_prompts', None))}"


def _q(r: Any) -> str:
    return _num(getattr(r, "q", None))


def section_harms(study: Study) -> list[str]:
    lines = _head(study, "harms", "Harms by model group")
    df = _analysis_csv(study, "baselines.csv", lines, "no harm result was analysed")
    if df is None:
        return lines
    df = df[df["category"] == "overall"].sort_values(["benchmark", "metric", "mitigation", "baseline", "stage"])
    rows = [
        [r.benchmark, r.metric, r.mitigation, _group(r), _ci(r.mean, r.ci_low, r.ci_high)]
        + [_ci(r.diff_vs_ref, r.diff_low, r.diff_high, True) if r.baseline != "vanilla" else "reference"]
        + [_num(r.p_value), _q(r), f"{_design_cell(r)} x {_int(r.n_samples)}", _num(r.mde), str(r.powered)]
        + ["constant" if _flag(r.constant) else ""]
        for r in df.itertuples()
    ]
    head = ["benchmark", "metric", "mitigation", "group", "mean [95% CI]", "vs vanilla [CI]", "p", "q"]
    lines += [_table([*head, "models x prompts x samples", "MDE", "powered", "note"], rows), ""]
    return lines + [_source(study.analysis_file("baselines.csv"), " (category overall)"), ""]


def section_contrasts(study: Study) -> list[str]:
    lines = _head(study, "contrasts", "What the values add: contrasts")
    base = _analysis_csv(study, "baselines.csv", lines, "no harm result was analysed")
    if base is None:
        return lines
    vim = base[(base["baseline"] == "vim") & (base["category"] == "overall") & (base["mitigation"] == "none")]
    rows = [
        [
            "vim vs vanilla",
            f"vim/{r.stage}",
            "vanilla",
            r.benchmark,
            r.metric,
            _ci(r.diff_vs_ref, r.diff_low, r.diff_high, True),
        ]
        + [_num(r.p_value), _q(r), _design_cell(r), _num(r.mde), str(r.powered)]
        for r in vim.sort_values(["benchmark", "metric", "stage"]).itertuples()
    ]
    f = study.analysis_file("contrasts.csv")
    con, why = read_table(study, "contrasts.csv")
    for kind in ("vim_vs_control", "vim_vs_icl"):
        sel = con[con["contrast"] == kind] if con is not None else con
        if sel is None or sel.empty:
            rows.append([kind.replace("_", " "), "-", "-", "-", "-", why or "none estimated", *["-"] * 5])
            study.missing.append(kind)
            continue
        for r in sel.sort_values(["benchmark", "metric", "group", "control"]).itertuples():
            rows.append(
                [
                    kind.replace("_", " "),
                    r.group,
                    r.control,
                    r.benchmark,
                    r.metric,
                    _ci(r.estimate, r.ci_low, r.ci_high, True),
                ]
                + [_num(r.p_value), _q(r), _design_cell(r), _num(r.mde), str(r.powered)]
            )
    head = ["contrast", "group", "against", "benchmark", "metric", "difference [CI]", "p", "q", "models x prompts"]
    lines += [_table([*head, "MDE", "powered"], rows), ""]
    src = f"Sources: `{_rel(study.analysis_file('baselines.csv'))}` (vim vs vanilla, no mitigation) and "
    none = " (not written: no control or ICL result was analysed)" if not f.is_file() else ""
    src += f"`{_rel(f)}`" + ("" if con is not None else none or f" ({why})")
    return lines + [src + ".", ""]


def section_regressions(study: Study) -> list[str]:
    lines = _head(study, "regressions", "Value -> harm regressions")
    if not study.analysed():
        return lines + _no_analysis(study)
    f = study.analysis_file("regressions.csv")
    df, why = read_table(study, "regressions.csv")
    if df is None:
        notes = [str(x) for x in study.info().get("findings") or [] if "regression" in str(x)]
        study.missing.append(why or "regressions.csv")
        return lines + [
            f"{why}." if why else "No regression was fitted (the analysis wrote no regressions.csv).",
            *notes,
            "",
        ]
    df = df[df["term"] != "Intercept"]
    if "regressors" not in df:
        lines += ["Regressions on measured values: not in this analysis (regressions.csv has no `regressors`).", ""]
        df = df.assign(regressors="target")
    order = ["regressors", "benchmark", "metric", "stage", "term"]
    rows = [
        [r.regressors, r.benchmark, r.metric, r.stage, r.term, _ci(r.coef, r.ci_low, r.ci_high, True)]
        + [_num(r.p), _num(getattr(r, "q", r.p_adj)), _int(r.n), _num(r.mde)]
        + ["powered" if _flag(r.powered) else f"UNDERPOWERED (n={_int(r.n)} < {_int(r.min_profiles)} profiles)"]
        for r in df.sort_values(order).itertuples()
    ]
    head = ["regressors", "benchmark", "metric", "stage", "term", "slope [CI]", "p", "q", "n", "MDE slope", "label"]
    return lines + [_table(head, rows), "", _source(f, " (intercepts left out)"), ""]


def section_mitigations(study: Study) -> list[str]:
    lines = _head(study, "mitigations", "Mitigation deltas")
    df = _analysis_csv(study, "mitigation.csv", lines, "no result with a mitigation was analysed")
    if df is None:
        return lines
    df = df[df["category"] == "overall"].sort_values(["benchmark", "metric", "baseline", "stage", "mitigation"])
    rows = [
        [r.benchmark, r.metric, _group(r), r.mitigation, str(r.disregard) if pd.notna(r.disregard) else "-"]
        + [_num(r.mean_reference), _num(r.mean_mitigated), _ci(r.mean_delta, r.ci_low, r.ci_high, True)]
        + [_num(r.p_value), _q(r), _design_cell(r), _num(r.mde), str(r.powered)]
        for r in df.itertuples()
    ]
    head = ["benchmark", "metric", "group", "mitigation", "disregards", "without", "with", "delta [CI]", "p", "q"]
    lines += [_table([*head, "models x prompts", "MDE", "powered"], rows), ""]
    return lines + [_source(study.analysis_file("mitigation.csv"), " (category overall)"), ""]


def section_figures(study: Study) -> list[str]:
    """The analysis figures copied beside the document (a mirror: stale ones removed) and linked."""
    lines = ["## Figures", ""]
    if not study.analysed():
        return lines + _no_analysis(study)
    dest = study.plan.document.with_name(f"study-{study.plan.name}")
    pngs = sorted(study.analysis_file("figures").glob("*.png"))
    for old in sorted(dest.glob("*.png")) if dest.is_dir() else []:
        if old.name not in {p.name for p in pngs}:
            old.unlink()
    for p in pngs:
        dest.mkdir(parents=True, exist_ok=True)
        if not (dest / p.name).is_file() or (dest / p.name).read_bytes() != p.read_bytes():
            shutil.copyfile(p, dest / p.name)
        lines += [f"![{p.stem}]({dest.name}/{p.name})", ""]
    info = study.info()
    lines += [] if pngs else ["The analysis drew no figure.", ""]
    lines += [f"The analysis report: `{_rel(study.analysis_file('report.md'))}`; multiplicity: "]
    lines[-1] += family_text(info.get("family")) + "."
    return lines + ["", _source(study.analysis_file("figures"), " (copied to " + f"`{_rel(dest)}`)"), ""]


# ---------------------------------------------------------------------------------- the document
def render(plan: Any, record: dict[str, Any], status: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The generated part of the document (between the markers) and what was missing, from a study plan
    (tools.study.Plan), its record (study.read_record) and its per-stage status (study.study_status)."""
    study = Study(plan, record, status)
    checks = train_checks(plan)
    started = [s.name for s in study.stages if study.rows[s.name]["state"] != "not started"]
    intro = [
        f"_Generated by `python -m value_harms.study report {plan.name}` from the study's stored files; "
        "everything between the generated markers is rewritten by it, the text outside them is kept._",
        "",
    ]
    if not started and not checks:
        intro += ["**Nothing has run yet**: no stage of the plan has started and the store holds no result.", ""]
    parts = [intro, section_design(study), section_runs(study), section_alignment(study, checks)]
    parts += [section_signal(study, checks), section_harms(study), section_contrasts(study)]
    parts += [section_regressions(study), section_mitigations(study), section_figures(study)]
    return "\n".join(line for part in parts for line in part).rstrip("\n") + "\n", study.missing


def merge(existing: str | None, generated: str, title: str) -> str:
    """The document with its generated part replaced; a new one gets a title and a Conclusion to write."""
    block = f"{MARK_START}\n{generated}{MARK_END}"
    if existing is None:
        return f"# {title}\n\n{block}\n\n## Conclusion\n\nWritten by hand after the run.\n"
    i, j = existing.find(MARK_START), existing.find(MARK_END)
    if i < 0 and j < 0:
        return existing.rstrip("\n") + f"\n\n{block}\n"
    if i < 0 or j < i or existing.count(MARK_START) != 1 or existing.count(MARK_END) != 1:
        raise ConfigError(
            f"the study document needs exactly one {MARK_START} followed by one {MARK_END}; fix the markers "
            "(the text between them is regenerated, the rest kept)"
        )
    return existing[:i] + block + existing[j + len(MARK_END) :]


def write_report(plan: Any, record: dict[str, Any], status: list[dict[str, Any]]) -> str:
    """Write the plan's document (plan.document) from the study's stored files (render's arguments); returns
    a one-line summary: the path, the number of sections and what is missing."""
    doc = plan.document
    generated, missing = render(plan, record, status)
    old = doc.read_text(encoding="utf-8") if doc.is_file() else None
    new = merge(old, generated, f"Study {plan.name}: value alignment and harms")
    if new != old:
        doc.parent.mkdir(parents=True, exist_ok=True)
        files.atomic_write_text(doc, new)
    sections = generated.count("\n## ") + generated.startswith("## ")
    return f"{_rel(doc)}: {sections} sections; missing: {'; '.join(missing) or 'nothing'}"
