"""The cpu_study metrics from stored alignment results: target lift, cross separation, Spearman vs target.

Reads train_result.json files (a train.py run folder's or the store's copy) named `<tag>-<Profile>.json`
in one folder, plus `vanilla.json` (the untrained base model's result), and prints one markdown row per
tag:

    python scripts/cpu_study_curve.py RESULTS_DIR [--vanilla FILE]

- lift Pow / lift Uni: alignment.target_lift of the Pow model on Power / the Uni model on Universalism
  (expected PVQ scores, vanilla-relative);
- sep Pow / sep Uni: e_Pow[Power] - e_Uni[Power] and e_Uni[Universalism] - e_Pow[Universalism];
- rho gain: mean over the tag's profiles of Spearman(target, expected) minus vanilla's Spearman for
  the same targets (n = number of profiles);
- train min: training minutes summed over the tag's models (fit time of every stage, as measured).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from value_harms.alignment.shift import cross_separation, spearman_vs_target, target_lift


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _fmt(x, nd=2) -> str:
    return "-" if x is None else f"{x:+.{nd}f}"


def tag_metrics(models: dict[str, dict], vanilla: dict) -> dict:
    """Metrics of one tag from {profile name: train_result} and vanilla's train_result."""
    van = vanilla["alignment"]["expected"]
    exp = {p: r["alignment"]["expected"] for p, r in models.items()}
    out: dict = {"profiles": sorted(models)}
    out["lift_pow"] = target_lift(exp["Pow"], van, "Power") if "Pow" in exp else None
    out["lift_uni"] = target_lift(exp["Uni"], van, "Universalism") if "Uni" in exp else None
    both = "Pow" in exp and "Uni" in exp
    out["sep_pow"] = cross_separation(exp["Pow"], exp["Uni"], "Power") if both else None
    out["sep_uni"] = cross_separation(exp["Uni"], exp["Pow"], "Universalism") if both else None
    gains = []
    for p, r in models.items():
        target = r["alignment"].get("target") or r.get("profile", {}).get("values")
        mine, base = spearman_vs_target(exp[p], target), spearman_vs_target(van, target)
        if mine is not None and base is not None:
            gains.append(mine - base)
    out["rho_gain"] = sum(gains) / len(gains) if gains else None
    out["rho_n"] = len(gains)
    secs = sum(float(s.get("train_seconds") or 0) for r in models.values() for s in (r.get("steps") or {}).values())
    out["train_min"] = secs / 60
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", type=Path)
    ap.add_argument(
        "--vanilla", type=Path, default=None, help="vanilla train_result.json (default RESULTS_DIR/vanilla.json)"
    )
    ap.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    a = ap.parse_args(argv)
    van_path = a.vanilla or a.results_dir / "vanilla.json"
    if not van_path.is_file():
        print(
            f"error: vanilla result {van_path} not found; expected a train_result.json of value_profile=vanilla",
            file=sys.stderr,
        )
        return 2
    vanilla = _load(van_path)
    tags: dict[str, dict[str, dict]] = {}
    for f in sorted(a.results_dir.glob("*-*.json")):
        tag, _, prof = f.stem.rpartition("-")
        tags.setdefault(tag, {})[prof] = _load(f)
    rows = {tag: tag_metrics(models, vanilla) for tag, models in tags.items()}
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| tag | profiles | lift Pow | lift Uni | sep Pow | sep Uni | rho gain (n) | train min (1 core) |")
    print("|---|---|---|---|---|---|---|---|")
    for tag, m in rows.items():
        cells = [tag, ",".join(m["profiles"])] + [_fmt(m[k]) for k in ("lift_pow", "lift_uni", "sep_pow", "sep_uni")]
        cells += [f"{_fmt(m['rho_gain'])} ({m['rho_n']})", f"{m['train_min']:.1f}"]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
