"""Report: figures, Markdown/HTML report, findings sentences and W&B logging on hand-made frames."""

from __future__ import annotations

import base64
import logging

import pandas as pd
import pytest

from value_harms.analysis import report as R
from value_harms.analysis.report import figures
from value_harms.core.values import VALUES

NAN = float("nan")


def _reg(significant: bool = True) -> pd.DataFrame:
    rows = []
    cols = [
        ("hex_phi", "hate_harass_violence", "harmfulness_score"),
        ("hex_phi", "adult_content", "harmfulness_score"),
        ("rtp", "", "toxicity_probability"),
    ]
    for b, c, m in cols:
        for i, v in enumerate(VALUES):
            coef = 0.05 * (i - 4.5)
            p = 0.4
            rows.append(
                dict(
                    benchmark=b,
                    category=c,
                    metric=m,
                    term=v,
                    coef=coef,
                    se=0.1,
                    t=coef / 0.1,
                    p=p,
                    p_adj=0.6,
                    significant=False,
                    ci_low=coef - 0.2,
                    ci_high=coef + 0.2,
                    n=12,
                    failures=0,
                    r2=0.3,
                )
            )
    df = pd.DataFrame(rows)
    if significant:
        hit = (df["term"] == "Power") & (df["category"] == "hate_harass_violence")
        df.loc[hit, ["coef", "p", "p_adj", "significant"]] = [0.31, 0.0001, 0.002, True]
        low = (df["term"] == "Universalism") & (df["benchmark"] == "rtp")
        df.loc[low, ["coef", "p", "p_adj", "significant"]] = [-0.12, 0.001, 0.03, True]
    # a failed fit: NaN everywhere
    df.loc[
        (df["term"] == "Tradition") & (df["benchmark"] == "rtp"),
        ["coef", "se", "t", "p", "p_adj", "ci_low", "ci_high", "r2"],
    ] = NAN
    df.loc[(df["term"] == "Tradition") & (df["benchmark"] == "rtp"), "failures"] = 2
    return df


def _cmp() -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(
                benchmark="beavertails",
                metric="flagged_rate",
                baseline="vanilla",
                mean=0.30,
                ci_low=0.25,
                ci_high=0.35,
                n=100,
                diff_vs_ref=NAN,
                p_value=NAN,
                test="–",
            ),
            dict(
                benchmark="beavertails",
                metric="flagged_rate",
                baseline="vim",
                mean=0.42,
                ci_low=0.38,
                ci_high=0.46,
                n=1400,
                diff_vs_ref=0.12,
                p_value=0.03,
                test="welch",
            ),
            dict(
                benchmark="beavertails",
                metric="flagged_rate",
                baseline="benign",
                mean=0.33,
                ci_low=NAN,
                ci_high=NAN,
                n=2,
                diff_vs_ref=0.03,
                p_value=0.6,
                test="welch",
            ),
            dict(
                benchmark="rtp",
                metric="expected_max_toxicity",
                baseline="vanilla",
                mean=0.2,
                ci_low=0.18,
                ci_high=0.22,
                n=100,
                diff_vs_ref=NAN,
                p_value=NAN,
                test="–",
            ),
            dict(
                benchmark="rtp",
                metric="expected_max_toxicity",
                baseline="vim",
                mean=0.21,
                ci_low=0.2,
                ci_high=0.22,
                n=1400,
                diff_vs_ref=0.01,
                p_value=0.4,
                test="welch",
            ),
            dict(
                benchmark="rtp",
                metric="toxicity_probability",
                baseline="vanilla",
                mean=0.1,
                ci_low=0.05,
                ci_high=0.15,
                n=100,
                diff_vs_ref=NAN,
                p_value=NAN,
                test="–",
            ),
            dict(
                benchmark="rtp",
                metric="toxicity_probability",
                baseline="icl",
                mean=NAN,
                ci_low=NAN,
                ci_high=NAN,
                n=0,
                diff_vs_ref=NAN,
                p_value=NAN,
                test="welch",
            ),
        ]
    )


def _mit() -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(
                benchmark="beavertails",
                metric="flagged_rate",
                baseline="vim",
                mitigation="value_prompt",
                delta_mean=-0.05,
                ci_low=-0.08,
                ci_high=-0.02,
                n_pairs=140,
                p_value=0.004,
            ),
            dict(
                benchmark="beavertails",
                metric="flagged_rate",
                baseline="vim",
                mitigation="safety_prompt",
                delta_mean=-0.02,
                ci_low=-0.06,
                ci_high=0.02,
                n_pairs=140,
                p_value=0.3,
            ),
            dict(
                benchmark="beavertails",
                metric="flagged_rate",
                baseline="vanilla",
                mitigation="both",
                delta_mean=0.01,
                ci_low=NAN,
                ci_high=NAN,
                n_pairs=1,
                p_value=NAN,
            ),
            dict(
                benchmark="rtp",
                metric="toxicity_probability",
                baseline="vim",
                mitigation="auto",
                delta_mean=-0.01,
                ci_low=-0.03,
                ci_high=0.01,
                n_pairs=140,
                p_value=0.2,
            ),
        ]
    )


def _aln() -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(
                profile="Pow",
                model="smollm2_135m",
                stage="full",
                nmse_greedy=0.21,
                nmse_expected=0.35,
                parse_rate=1.0,
                collapsed=True,
            ),
            dict(
                profile="Uni",
                model="smollm2_135m",
                stage="full",
                nmse_greedy=NAN,
                nmse_expected=0.28,
                parse_rate=0.0,
                collapsed=False,
            ),
        ]
    )


def _fid() -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(profile="Pow", nmse_none=0.3, nmse_value_prompt=0.4, delta=0.1),
            dict(profile="Uni", nmse_none=0.2, nmse_value_prompt=NAN, delta=NAN),
        ]
    )


def _prov(stand_in: bool = True) -> dict:
    return {
        "results": ["outputs/runs/evaluate/a/results.json", "outputs/runs/evaluate/b/results.json"],
        "n_results": 2,
        "scorers": {
            "rtp": ["profanity_check:alt-profanity-check-1.6.1 (stand-in)"],
            "beavertails": ["judge:local:model:smollm2_135m"],
        },
        "stand_in": {"rtp": stand_in, "beavertails": False},
        "benchmark_versions": {"rtp": {"revision": "abc123"}, "beavertails": "v1"},
        "failures": {"rtp": 2, "beavertails": 0},
        "git": "deadbeef",
        "audit": {
            "texts": 8000,
            "scored": 7990,
            "flagged": 5,
            "threshold": 0.5,
            "scorer": {"scorer": "profanity_check:alt-profanity-check-1.6.1 (stand-in)", "stand_in": True},
        },
    }


EMPTY_REG = pd.DataFrame(
    columns=[
        "benchmark",
        "category",
        "metric",
        "term",
        "coef",
        "se",
        "t",
        "p",
        "p_adj",
        "significant",
        "ci_low",
        "ci_high",
        "n",
        "failures",
        "r2",
    ]
)


def test_format_numbers():
    assert R.fmt_num(0.31) == "0.310"
    assert R.fmt_num(NAN) == "–" and R.fmt_num(None) == "–"
    assert R.fmt_num(0.0001, p=True) == "<0.001"
    assert R.fmt_num(0.12, signed=True) == "+0.120"
    assert R.fmt_num(True) == "yes"
    md = R.markdown_table(pd.DataFrame({"a|b": ["x|y"], "n": [3.0], "p": [NAN]}))
    assert "a\\|b" in md and "| 3 |" in md and "–" in md


def test_figures_and_empty_frames(tmp_path):
    figs = R.make_figures(_reg(), _cmp(), _mit(), tmp_path)
    assert set(figs) == {"coef_heatmap", "baselines__beavertails", "baselines__rtp", "mitigation"}
    for p in figs.values():
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    none = R.make_figures(EMPTY_REG, pd.DataFrame(), None, tmp_path / "none")
    assert none == {}
    assert not (tmp_path / "none").exists() or not list((tmp_path / "none").iterdir())


def test_heatmap_split_per_metric(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "MAX_HEATMAP_COLUMNS", 2)
    figs = R.make_figures(_reg(), None, None, tmp_path)
    assert set(figs) == {"coef_heatmap__harmfulness_score", "coef_heatmap__toxicity_probability"}


def test_findings_sentences():
    """One family over every test: the raw p 0.030 of a comparison is not headlined among 35
    tests; every sentence names its estimand and states q and the family size."""
    f = R.top_findings(_reg(), _cmp(), _mit(), k=5)
    assert f[0] == (
        "Power raises hate_harass_violence harmfulness_score on HEx-PHI across the value-aligned models' "
        "profiles (slope 0.310 per intensity point, 12 profiles, p <0.001, q 0.004 over 35 tests)."
    )
    assert f[1] == (
        "No variant (benign, icl, vim) differs from this vanilla model (every q > 0.05 among the tests whose "
        "design meets the minimum; family of 35 tests)."
    )
    assert f[2].startswith(
        "value_prompt lowers BeaverTails flagged_rate by 0.050 within the value-aligned models (the same models "
        "and prompts without it; 95% CI -0.080 to -0.020, p 0.004, q 0.047 over 35 tests)"
    )
    assert any(s.startswith("Universalism lowers toxicity_probability on RealToxicityPrompts") for s in f)
    assert len(R.top_findings(_reg(), _cmp(), _mit(), k=2)) == 2

    none = R.top_findings(_reg(significant=False), None, None)
    assert none == [
        "No value coefficient is significant across the value-aligned models' profiles (q <= 0.05; "
        "N models = 12, 29 coefficients in a family of 29 tests)."
    ]
    assert R.top_findings(None, pd.DataFrame(), EMPTY_REG) == []


def test_write_report(tmp_path):
    reg, cmp, mit = _reg(), _cmp(), _mit()
    findings = R.top_findings(reg, cmp, mit)
    paths = R.write_report(
        tmp_path,
        reg=reg,
        cmp=cmp,
        mit=mit,
        aln=_aln(),
        fid=_fid(),
        provenance=_prov(),
        findings=findings,
        auto_mitigation={
            "hate_harass_violence": ["Power", "Stimulation"],
            "adult_content": {"disregard": ["Hedonism"]},
        },
    )
    md = paths["report.md"].read_text()
    page = paths["report.html"].read_text()
    # self-contained HTML: every figure embedded, no external asset
    assert page.count('src="data:image/png;base64,') == 4
    png = base64.b64decode(page.split('src="data:image/png;base64,')[1].split('"')[0])
    assert png[:4] == b"\x89PNG"
    assert "http://" not in page and "https://" not in page and "<link" not in page
    warning = (
        "Scores for RealToxicityPrompts come from a stand-in classifier (alt-profanity-check), not the "
        "paper's Perspective API / Detoxify: compare shapes, not values, with the paper"
    )
    assert warning in page and warning in md and 'class="warn"' in page
    for section in (
        "Summary",
        "Scorers &amp; provenance",
        "Value → harm regressions",
        "Baselines (Table 3",
        "Mitigation (Table 4",
        "Value alignment",
        "Persona fidelity",
        "Training-data audit",
        "Automatic mitigation",
    ):
        assert section in page
    # tables in Markdown, formatted to 3 decimals with NaN as "–"
    assert "| benchmark | metric | baseline | mean |" in md
    assert "| beavertails | flagged_rate | vim | 0.420 | 0.380 | 0.460 | 1400 | 0.120 | 0.030 | welch |" in md
    assert "| hex_phi | hate_harass_violence | harmfulness_score | Power | 0.310 |" in md
    assert "| Uni | smollm2_135m | full | – | 0.280 | 0.000 | no |" in md
    assert "collapsed" in md and "Pow (smollm2_135m, full)" in md
    assert "Power, Stimulation" in md and "disregard: Hedonism" in md
    assert "5 of 7990 scored training texts" in md
    assert findings[0] in md and "](figures/coef_heatmap.png)" in md
    for name in ("coef_heatmap", "baselines__beavertails", "mitigation"):
        assert paths[name].is_file()


def test_write_report_minimal(tmp_path):
    """Empty frames, no stand-in, nothing significant: a report is still written, without figures."""
    paths = R.write_report(
        tmp_path,
        reg=_reg(significant=False),
        cmp=pd.DataFrame(),
        mit=None,
        aln=pd.DataFrame(),
        fid=pd.DataFrame(),
        provenance=_prov(stand_in=False),
        findings=R.top_findings(_reg(significant=False), None, None),
        auto_mitigation=None,
    )
    page = paths["report.html"].read_text()
    md = paths["report.md"].read_text()
    assert "stand-in classifier" not in page and 'class="warn"' not in page
    assert page.count("data:image/png;base64,") == 1  # the heatmap only
    assert "No value coefficient is significant" in md and "No baseline comparison." in md
    assert "Persona fidelity" not in md and "Automatic mitigation" not in md
    assert set(paths) == {"report.md", "report.html", "coef_heatmap"}


def test_log_report_to_wandb_offline(tmp_path, caplog):
    wandb = pytest.importorskip("wandb")
    figs = R.make_figures(_reg(), _cmp(), _mit(), tmp_path / "figs")
    run = wandb.init(
        mode="offline",
        dir=str(tmp_path),
        project="value-harms-test",
        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
    )
    try:
        keys = R.log_report_to_wandb(
            run,
            figs,
            {
                "regressions": _reg(),
                "baselines": _cmp(),
                "mitigation": _mit(),
                "alignment": _aln(),
                "empty": pd.DataFrame(),
                "none": None,
            },
        )
    finally:
        run.finish()
    assert "report/figure/coef_heatmap" in keys and "report/table/regressions" in keys
    assert "report/table/empty" not in keys

    # a broken run only warns
    class Broken:
        def log(self, *_a, **_k):
            raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING):
        assert R.log_report_to_wandb(Broken(), figs, {"x": _cmp()}) == []
    assert "boom" in caplog.text
    assert R.log_report_to_wandb(None, figs, {}) == []


def test_frames_shaped_like_stats_output(tmp_path):
    """analysis.stats adds model/stage columns, an Intercept term, 'overall' categories, None p-values
    and names the mitigation columns mean_delta / n: the report accepts them."""
    reg = _reg().assign(model="smollm2_135m", stage="full", rank_deficient=False, standardized=False)
    reg["category"] = reg["category"].replace("", "overall")
    reg = pd.concat([reg, reg.iloc[:1].assign(term="Intercept", p_adj=NAN, significant=False)], ignore_index=True)
    cmp = pd.concat(
        [
            _cmp().assign(model="smollm2_135m", stage="full", category="overall", mitigation="none"),
            _cmp()
            .iloc[[2]]
            .assign(model="smollm2_135m", stage="benign_dolly", category="overall", mitigation="none", p_value=1e-4),
        ],
        ignore_index=True,
    )
    cmp.loc[cmp["baseline"] == "benign", "stage"] = ["benign_alpaca", "benign_dolly"]
    cmp["p_value"] = cmp["p_value"].astype(object).where(cmp["p_value"].notna(), None)
    mit = (
        _mit()
        .rename(columns={"delta_mean": "mean_delta", "n_pairs": "n"})
        .assign(model="smollm2_135m", stage="full", disregard=["Power, Stimulation", "", "", ""])
    )
    f = R.top_findings(reg, cmp, mit, k=6)
    assert not any("Intercept" in s for s in f)
    assert f[0].startswith("Power raises hate_harass_violence harmfulness_score on HEx-PHI")
    assert any(
        s.startswith(
            "Benign fine-tuned models (benign_dolly): BeaverTails flagged_rate 0.330 vs this vanilla model 0.300"
        )
        for s in f
    )
    assert any(
        s.startswith("value_prompt (disregard: Power, Stimulation) lowers BeaverTails flagged_rate by 0.050") for s in f
    )
    assert "toxicity_probability on RealToxicityPrompts across" in " ".join(f)  # 'overall' is not named
    paths = R.write_report(
        tmp_path,
        reg=reg,
        cmp=cmp,
        mit=mit,
        aln=None,
        fid=None,
        provenance={},
        findings=f,
        auto_mitigation={"hex_phi/overall": [], "all": ["Power"]},
    )
    md = paths["report.md"].read_text()
    assert "| delta_mean |" in md and "| -0.050 |" in md and "| hex_phi/overall | none |" in md
    assert {"coef_heatmap", "mitigation"} <= set(paths)


def test_figure_stars_read_the_reports_naming_rule_and_say_so():
    import pandas as pd

    from value_harms.analysis.report.figures import _star_values, _stars_caption
    from value_harms.analysis.report.format import p_stars

    assert "q<0.05" in _stars_caption(pd.DataFrame({"p_value": [0.01], "q": [0.04]}))
    # the stars read the report's naming rule: a group below the design minimum (one model) gets none
    frame = pd.DataFrame({"p_value": [0.001, 0.001], "q": [0.005, 0.005], "powered": [True, False]})
    assert [p_stars(v) for v in _star_values(frame)] == ["**", ""]
    assert "p<0.05 unadjusted" in _stars_caption(pd.DataFrame({"p_value": [0.01]}))
