"""The registries: measures, benchmarks, scorers. An unknown name is a one-line error that names
it and the known ones; an entry added in a test runs through the same path as the shipped ones."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from value_harms.errors import EvaluationError
from value_harms.eval.benchmarks import Prompt
from value_harms.eval.measures import MEASURES, Measure, check_benchmark_config, compute_metrics
from value_harms.metrics import MEASURE_SPECS, MeasureSpec, MetricSpec, Scale

CONF = Path(__file__).resolve().parents[1] / "conf"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------------------------------
# measures


def test_unknown_measure_and_metric_are_one_line_errors_naming_them():
    with pytest.raises(EvaluationError) as e:
        check_benchmark_config(OmegaConf.create({"name": "rtp", "format": "rtp_list", "measure": "toxic"}))
    assert "'toxic'" in _one_line(e) and "toxicity, regard, harmfulness, flag, alignment" in str(e.value)
    # benchmark.metrics was declared and never read: a typo in it now stops the job at load
    bench = OmegaConf.create(
        {"name": "rtp", "format": "rtp_list", "measure": "toxicity", "metrics": ["expected_max_tox"]}
    )
    with pytest.raises(EvaluationError) as e:
        check_benchmark_config(bench)
    assert "'expected_max_tox'" in _one_line(e) and "expected_max_toxicity, toxicity_probability" in str(e.value)


def test_every_shipped_benchmark_names_a_registered_measure_and_its_metrics():
    from value_harms.scoring import SCORERS

    for f in sorted(glob.glob(str(CONF / "benchmark" / "*.yaml"))):
        bench = OmegaConf.load(f)
        measure = check_benchmark_config(bench)
        assert list(bench.metrics) and set(bench.metrics) <= set(measure.metrics), f
        assert measure.scorer is None or measure.scorer in SCORERS, f


def test_a_measure_registered_in_a_test_computes_through_the_same_path(monkeypatch):
    def group(bench, name, rows, primary):
        vals = [r["score"] for r in rows if r["score"] is not None]
        return {
            "mean_length": sum(vals) / len(vals) if vals else None,
            "n": len(vals),
            "missing": sum(r["score"] is None for r in rows),
        }

    spec = MeasureSpec("length", "Length", metrics=(MetricSpec("mean_length", True, Scale("characters", 0.0, None)),))
    monkeypatch.setitem(MEASURES, "length", Measure(spec, scorer=None, group=group))
    bench = OmegaConf.create({"name": "t", "measure": "length", "metrics": ["mean_length"]})
    with pytest.raises(EvaluationError, match="call metrics.register_measure") as e:  # analysis would miss it
        compute_metrics(bench, [], [])
    _one_line(e)
    monkeypatch.setitem(MEASURE_SPECS, "length", spec)
    prompts = [Prompt("a", "x", "c1"), Prompt("b", "y", "c2")]
    rows = [
        {"id": "a", "category": "c1", "score": 2.0},
        {"id": "b", "category": "c2", "score": 4.0},
        {"id": "b", "category": "c2", "score": None},
    ]
    out = compute_metrics(bench, prompts, rows)
    assert out == {
        "overall": {"mean_length": 3.0, "n": 2, "missing": 1},
        "c1": {"mean_length": 2.0, "n": 1, "missing": 0},
        "c2": {"mean_length": 4.0, "n": 1, "missing": 1},
    }


def test_each_measure_is_declared_once_in_metrics_and_referenced_by_its_entry():
    """The evaluation entry of every measure is its metrics/ declaration: names, metrics and direction are
    read from there (no second list), and a declaration clashing with a registered one is refused."""
    from value_harms.metrics import ALIGNMENT, TOXICITY, harm_sign, non_harm_metrics, register_measure

    assert set(MEASURES) == set(MEASURE_SPECS)
    for name, m in MEASURES.items():
        assert m.spec is MEASURE_SPECS[name] and m.name == name and m.metrics == m.spec.metric_names
    assert non_harm_metrics() == {m.name for m in ALIGNMENT.all_metrics}
    assert not ALIGNMENT.harm and MEASURES["alignment"].reads_answers and not MEASURES["toxicity"].reads_answers
    assert harm_sign("toxicity_probability") == 1 and harm_sign("nmse_expected") == 0 and harm_sign("unknown") == 1
    with pytest.raises(ValueError, match="'toxicity' is registered already"):
        register_measure(TOXICITY)
    clash = MeasureSpec("tox2", "Tox", metrics=(MetricSpec("toxicity_probability", True, TOXICITY.metrics[1].scale),))
    with pytest.raises(ValueError, match="declared by measure 'toxicity'"):
        register_measure(clash)
    assert "tox2" not in MEASURE_SPECS
    with pytest.raises(ValueError, match="not both"):
        MetricSpec("x", True, Scale("x", 0.0, 1.0), per_sample=lambda s, labels: s, prompt_value=lambda s, labels, t: 0)


def test_benchmark_metrics_chooses_what_is_computed():
    prompts = [Prompt("p1", "a", None), Prompt("p2", "b", None)]
    rows = [
        {"id": p, "category": None, "score": s, "scorer": "x"}
        for p, s in (("p1", 0.9), ("p1", 0.1), ("p2", 0.2), ("p2", None))
    ]
    base = {"name": "rtp", "measure": "toxicity", "num_samples": 2, "toxicity_threshold": 0.5}
    full = compute_metrics(OmegaConf.create(base), prompts, rows)["overall"]
    assert full["expected_max_toxicity"] == 0.9 and full["toxicity_probability"] == 1.0  # p2 is partial
    only = compute_metrics(OmegaConf.create({**base, "metrics": ["toxicity_probability"]}), prompts, rows)["overall"]
    assert only == {k: v for k, v in full.items() if not k.startswith("expected_max_toxicity")}
    # regard without bias_score: no bootstrap, no baseline lookup
    reg = OmegaConf.create(
        {
            "name": "hb",
            "measure": "regard",
            "metrics": ["negative_regard_rate"],
            "bias_baseline": "vanilla",
            "bootstrap_resamples": 99,
            "seed": 1,
        }
    )
    rr = [{"id": "p1", "category": "ax", "score": 1.0, "label": "negative"}]
    out = compute_metrics(reg, [Prompt("p1", "The x", "ax")], rr)["overall"]
    assert out == {"negative_regard_rate": 1.0, "n": 1, "missing": 0}


# --------------------------------------------------------------------------------------------------
# benchmarks


def test_unknown_format_or_source_is_a_one_line_error_naming_the_known_ones():
    from value_harms.errors import BenchmarkError
    from value_harms.eval.benchmarks import FORMATS, load_prompts

    with pytest.raises(BenchmarkError) as e:
        check_benchmark_config(OmegaConf.create({"name": "x", "format": "pvq_itemz", "measure": "alignment"}))
    assert "'pvq_itemz'" in _one_line(e) and "did you mean 'pvq_items'" in str(e.value)
    assert ", ".join(FORMATS) in str(e.value)
    with pytest.raises(BenchmarkError) as e:
        load_prompts({"name": "hb", "format": "holistic_bias", "source": "hub"}, None)
    assert "'hub'" in _one_line(e) and "choose one of generated" in str(e.value)


def test_pvq_is_a_registered_benchmark_its_loader_lists_the_items(data_dir):
    from value_harms.eval.benchmarks import load_prompts

    bench = OmegaConf.load(CONF / "benchmark" / "pvq.yaml")
    assert check_benchmark_config(bench).name == "alignment"
    prompts = load_prompts(bench, str(data_dir))
    assert len(prompts) == 40 and [p.id for p in prompts[:2]] == ["1", "2"]
    assert prompts[1].category == "Power" and prompts[1].prompt.startswith("It is important to him to be rich")
    assert len(load_prompts(OmegaConf.merge(bench, {"per_category": 1}), str(data_dir))) == 10


def test_a_format_registered_in_a_test_loads_through_the_same_path(monkeypatch):
    from value_harms.eval.benchmarks import FORMATS, Format, load_prompts

    def inline(cfg, data_dir):
        return [Prompt(str(i), t, "c") for i, t in enumerate(cfg["texts"])], "inline"

    monkeypatch.setitem(FORMATS, "inline", Format({"local": inline}))
    got = load_prompts({"name": "t", "format": "inline", "texts": ["a", "b", "c"], "limit": 2}, None)
    assert [p.prompt for p in got] == ["a", "b"]


def test_benchmark_modules_have_no_cycle_and_import_first_in_a_fresh_interpreter():
    import ast
    import subprocess
    import sys

    folder = Path(__file__).resolve().parents[1] / "src" / "value_harms" / "eval" / "benchmarks"
    graph = {}
    for f in folder.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        graph[f.stem] = {n.rsplit(".", 1)[1] for n in names if n.startswith("value_harms.eval.benchmarks.")}
        if f.stem != "__init__":  # a submodule never reaches back into the package it belongs to
            assert "value_harms.eval.benchmarks" not in names, f.name

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    assert not [m for m in graph if reaches(m, m)]
    # the import that used to rely on the package defining Prompt before importing its submodules
    res = subprocess.run(
        [sys.executable, "-c", "import value_harms.eval.benchmarks.holistic_bias"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-1000:]


# --------------------------------------------------------------------------------------------------
# scorers


def test_unknown_scorer_and_backend_are_one_line_errors(compose):
    from value_harms.errors import ConfigError
    from value_harms.eval.variants import check_scorer_fits
    from value_harms.scoring import SCORERS, build_scorer

    with pytest.raises(ConfigError) as e:
        build_scorer("toxic", None)
    assert "'toxic'" in _one_line(e) and ", ".join(SCORERS) in str(e.value)
    # a backend name the registries do not know fails at load, not when the first text is scored
    cfg = compose("evaluate", ["benchmark=rtp", "scorer.fallback=[detoxfy]"])
    with pytest.raises(ConfigError) as e:
        check_scorer_fits(cfg)
    assert "'detoxfy'" in _one_line(e) and "perspective, detoxify, profanity_check" in str(e.value)
    cfg = compose("evaluate", ["benchmark=hex_phi", "scorer=llm_judge", "scorer.judge.backend=tgi"])
    with pytest.raises(ConfigError) as e:
        check_scorer_fits(cfg)
    assert "scorer.judge.backend" in _one_line(e) and "'tgi'" in str(e.value) and "openai" in str(e.value)


def test_a_scorer_registered_in_a_test_is_built_and_probed_through_the_registry(monkeypatch):
    from value_harms.scoring import SCORERS, Score, Scorer, ScorerKind, build_scorer, probe

    class Length(Scorer):
        name = "length"
        measure = "length"

        def score(self, texts, contexts=None):
            return [Score(float(len(t)), self.name) for t in texts]

        def provenance(self):
            return {"scorer": self.name}

    probed = []

    def check(name, cfg, info, timeout):
        probed.append(name)
        info.update(ok=True, reason="answered")
        return True

    monkeypatch.setitem(SCORERS, "length", ScorerKind(lambda name, cfg, cache: Length(), check))
    assert [s.value for s in build_scorer("length", {}).score(["ab", "abc"])] == [2.0, 3.0]
    assert probe("length", {})["ok"] is True and probed == ["length"]


def test_cli_reports_a_registry_miss_in_one_line_before_loading(tmp_path):
    from helpers.cli import run_script

    res = run_script(
        "evaluate.py",
        [
            "model=tiny",
            "logger=none",
            f"paths.output_dir={tmp_path}",
            f"paths.store_dir={tmp_path}/store",
            "benchmark=rtp",
            "benchmark.metrics=[emt]",
        ],
    )
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last == (
        "error: benchmark.metrics: 'emt' is not a metric of measure 'toxicity'; expected some of "
        "expected_max_toxicity, toxicity_probability"
    )
    assert not (tmp_path / "store").exists()  # nothing loaded, generated or stored
