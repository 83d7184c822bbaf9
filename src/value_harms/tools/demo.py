"""`make demo`: the main job end to end on the embedded defaults (SmolLM2-135M on CPU).

Runs exactly what a user would type (`python train.py -m experiment=demo value_profile=...`), then
reads the jobs' results from disk and prints the PVQ value-alignment table, saying plainly whether
value injection moved the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from value_harms.alignment.pvq import AlignmentResult
from value_harms.alignment.shift import separation_lines
from value_harms.alignment.table import format_alignment_table
from value_harms.eval.engines import ENGINES
from value_harms.eval.measures import get_measure

ROOT = Path(__file__).resolve().parents[3]


def collect_alignment(sweep_dir: Path) -> tuple[dict[str, AlignmentResult], dict[str, dict | None]]:
    """Alignment results of every job of a training sweep, keyed by profile name (job order)."""
    results: dict[str, AlignmentResult] = {}
    targets: dict[str, dict | None] = {}
    for res_file in sorted(sweep_dir.glob("*/train_result.json"), key=lambda p: int(p.parent.name.split("_")[0])):
        res = json.loads(res_file.read_text())
        if not res.get("alignment"):
            continue
        name = res["profile"]["name"]
        results[name] = AlignmentResult.from_dict(res["alignment"])
        targets[name] = res["profile"].get("values")
    return results, targets


# column headers of the demo's table (18 characters wide); any other metric is shown by its name
SHORT = {
    "expected_max_toxicity": "EMT",
    "toxicity_probability": "tox.prob",
    "negative_regard_rate": "neg.regard",
    "harmfulness_score": "harm.score",
    "harmfulness_rate": "harm.rate",
    "flagged_rate": "flagged",
}


def collect_evaluations(sweep_dir: Path) -> list[dict]:
    out = []
    for res_file in sorted(sweep_dir.glob("*/results.json"), key=lambda p: int(p.parent.name.split("_")[0])):
        out.append(json.loads(res_file.read_text()))
    return out


def format_comparison(results: list[dict]) -> str:
    """Rows: profile x mitigation; columns: each benchmark's main metrics (missing scores counted)."""
    benches = []
    for r in results:
        b = (r["benchmark"]["name"], r["benchmark"]["measure"])
        if b not in benches:
            benches.append(b)
    cols = [(b, m) for b, measure in benches for m in get_measure(measure).metrics]
    rows: dict[tuple[str, str], dict] = {}
    for r in results:
        key = (f"{r['profile']['name']} ({r['baseline']})", r["mitigation"]["name"])
        row = rows.setdefault(key, {})
        ov = r["metrics"]["overall"]
        # a judge that does not discriminate measures nothing: its figures are not shown (a note says why)
        shown = judge_left_out(r) is None
        for m in get_measure(r["benchmark"]["measure"]).metrics:
            row[(r["benchmark"]["name"], m)] = ov.get(m) if shown else "not used"
        row[(r["benchmark"]["name"], "missing")] = r["scorer"].get("missing")
    head = (
        f"{'model':<18}{'mitigation':<14}"
        + "".join(f"{b[:5] + ' ' + SHORT.get(m, m):>18}" for b, m in cols)
        + "".join(f"{b[:5] + ' missing':>15}" for b, _ in benches)
    )
    lines = [head, "-" * len(head)]
    for (model, mit), row in rows.items():
        cells = "".join(f"{_f(row.get(c)):>18}" for c in cols)
        miss = "".join(f"{_f(row.get((b, 'missing'))):>15}" for b, _ in benches)
        lines.append(f"{model:<18}{mit:<15}{cells}{miss}")
    notes = []
    for b, measure in benches:
        stand_in = any(r["scorer"].get("stand_in") for r in results if r["benchmark"]["name"] == b)
        scorers = sorted(
            {k for r in results if r["benchmark"]["name"] == b for k in (r["scorer"].get("by_scorer") or {})}
        )
        paper = get_measure(measure).reference_scorer or "the paper's scorer"
        notes.append(
            f"{b}: scored by {', '.join(scorers) or 'nothing (all missing)'}"
            + (f" -- STAND-IN scorer, not {paper}" if stand_in else "")
        )
        notes += [f"  {line}" for line in agreement_lines(results, b)]
    for b, _ in benches:
        whys = sorted({why for r in results if r["benchmark"]["name"] == b and (why := judge_left_out(r))})
        notes += [f"{b}: {why}; its results are not used (shown as 'not used')" for why in whys]
    legend = (
        "EMT = expected maximum toxicity over the samples of a prompt; tox.prob = share of prompts with a "
        "sample >= 0.5; flagged = share of answers the judge flagged; missing = scores that failed (excluded)."
    )
    return "\n".join(lines + [legend, ""] + notes)


def agreement_lines(results: list[dict], bench: str) -> list[str]:
    """The recorded agreement with Perspective of each offline backend that scored `bench`
    (`scorer.provenance.backends.<backend>.agreement.summary`, scoring/agreement.py), once each."""
    found: list[str] = []
    for r in (r for r in results if r["benchmark"]["name"] == bench):
        for prov in ((r["scorer"].get("provenance") or {}).get("backends") or {}).values():
            line = ((prov.get("agreement") or {}) if isinstance(prov, dict) else {}).get("summary")
            if line and line not in found:
                found.append(line)
    return found


def _f(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def judge_left_out(result: dict) -> str | None:
    """Why a result's judge is not used (`scorer.provenance.discrimination`, scoring/judge/discrimination.py),
    or None when it is."""
    prov = result["scorer"].get("provenance")
    check = prov.get("discrimination") if isinstance(prov, dict) else None
    return str(check.get("reason")) if isinstance(check, dict) and check.get("left_out") else None


def _run(cmd: list[str]) -> int:
    print("$", " ".join(["python", *cmd[1:]]), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def main(argv: list[str] | None = None) -> int:
    # size: the demo's script in the order its output is read
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default="vanilla,Pow,Uni", help="comma-separated value profiles")
    ap.add_argument("--benchmarks", default="rtp,beavertails")
    ap.add_argument("--mitigations", default="none,value_prompt")
    ap.add_argument("--out", default="outputs/demo", help="folder of the demo sweeps")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument(
        "--engine",
        default="hf",
        # the engines the project runs itself (one that only connects needs a server's URL)
        choices=[name for name, spec in ENGINES.items() if not spec.needs_base_url],
        help="generation engine of the evaluation (vllm: make engine-env)",
    )
    args = ap.parse_args(argv)

    out = Path(args.out) / time.strftime("%Y-%m-%d_%H-%M-%S")
    out = out if out.is_absolute() else ROOT / out
    t0 = time.perf_counter()
    rc = _run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "experiment=demo",
            f"value_profile={args.profiles}",
            f"hydra.sweep.dir={out / 'train'}",
        ]
    )
    if rc != 0:
        print(f"demo: training sweep failed (exit {rc}); logs are in {out / 'train'}", file=sys.stderr)
        return rc
    t_train = time.perf_counter() - t0
    if not args.skip_eval:
        rc = _run(
            [
                sys.executable,
                str(ROOT / "evaluate.py"),
                "-m",
                "experiment=demo",
                f"value_profile={args.profiles}",
                f"benchmark={args.benchmarks}",
                f"mitigation={args.mitigations}",
                f"generation.engine={args.engine}",
                f"hydra.sweep.dir={out / 'evaluate'}",
            ]
        )
        if rc != 0:
            print(f"demo: evaluation sweep failed (exit {rc}); logs are in {out / 'evaluate'}", file=sys.stderr)
            return rc
        rc = _run(
            [
                sys.executable,
                str(ROOT / "evaluate.py"),
                "experiment=demo",
                "mode=audit",
                f"hydra.run.dir={out / 'audit'}",
            ]
        )
        if rc != 0:
            print(f"demo: training-data audit failed (exit {rc})", file=sys.stderr)
            return rc
        rc = _run(
            [
                sys.executable,
                str(ROOT / "analyze.py"),
                "experiment=demo",
                f"analysis.inputs=[{out / 'evaluate'}]",
                f"analysis.alignment_inputs=[{out / 'train'}]",
                f"analysis.audit_inputs=[{out / 'audit'}]",
                f"analysis.auto_mitigation_file={out / 'analysis' / 'auto_mitigation.json'}",
                f"hydra.run.dir={out / 'analysis'}",
            ]
        )
        if rc != 0:
            print(f"demo: analysis failed (exit {rc})", file=sys.stderr)
            return rc
    t_all = time.perf_counter() - t0

    results, targets = collect_alignment(out / "train")
    print()
    print(f"== PVQ value alignment after VIM ({len(results)} runs, training {t_train:.0f} s) ==")
    print(format_alignment_table(results, targets))
    for line in separation_lines(results, targets):
        print(line)
    if any(r.settings.get("items_source") == "demo_items" for r in results.values()):
        print("note: the PVQ-40 items were not found; the table uses the project's own demo items.")
    if not args.skip_eval:
        evals = collect_evaluations(out / "evaluate")
        print()
        print(f"== Safety: vanilla vs value-aligned, with and without mitigation ({len(evals)} jobs) ==")
        print(format_comparison(evals))
        summary = json.loads((out / "analysis" / "analysis.json").read_text())
        print()
        print(f"== Analysis report: {summary['report_html']} ==")
        fam = summary.get("family") or {}
        if fam:  # every claim is counted: the family the findings are corrected over
            parts = ", ".join(f"{n} {k}" for k, n in sorted((fam.get("by_source") or {}).items()) if n)
            print(
                f"  (family: {fam.get('size')} test(s){f' ({parts})' if parts else ''}, {fam.get('method')} at "
                f"q <= {fam.get('alpha')}; each sentence names what it compares with)"
            )
        for f in summary["findings"]:
            print(f"  - {f}")
    print()
    print(f"demo finished in {t_all:.0f} s; everything is under {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
