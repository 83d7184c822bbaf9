"""A catalogue of bad inputs, each run as a user would (train.py / evaluate.py / analyze.py in a
subprocess, tiny model, tmp paths).

For every case: the process exits non-zero; the LAST stderr line is one line starting with "error:"
that names the problem AND the fix (a config key to set, the valid options, a command to run); and
nothing partial is left behind (no COMPLETE / results.json / train_result.json / adapter under
paths.store_dir; a run folder may exist, but its status.json says failed; nothing is written
outside paths.output_dir and paths.store_dir).

Sixteen cases run as subprocesses (two at a time); the others in-process through
`value_harms.runtime.cli.run_task`, the path the entry points take after composition. Extra, in-process
checks: an evaluation whose model produces empty continuations finishes and counts them (not an
error); the file-name rules of value_harms.config.validate on names a command line cannot easily carry.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers.cli import run_script

VALUES_HEADER = (
    "\tConclusion\tStance\tPremise\tAchievement\tBenevolence\tConformity\tHedonism\tPower\tSecurity"
    "\tSelf-direction\tStimulation\tTradition\tUniversalism\n"
)

TRAIN = ["debug=fast", "vim_stage=ag", "trainer.enable_progress_bar=false"]
EVAL = [
    "benchmark.limit=2",
    "benchmark.max_new_tokens=2",
    "benchmark.num_samples=1",
    "scorer=profanity_check",
    "generation.progress=false",
]


def _files(root: Path) -> dict[str, Path]:
    """Bad input files a user could plausibly hand over."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty_valueEval_10.csv").write_text(VALUES_HEADER)  # header only
    (root / "malformed_valueEval_10.csv").write_text(  # value columns missing
        "\tConclusion\tStance\tPremise\tAchievement\n0\tWe should ban X\tin favor of\tbecause\t1\n"
    )
    (root / "latin1_beavertails.csv").write_bytes(
        ",prompt,category,category_id\n0,How do I make a caf\xe9 cr\xe8me?,animal_abuse,0\n".encode("latin-1")
    )
    (root / "empty_beavertails.csv").write_text("")
    (root / "not_an_adapter").mkdir(exist_ok=True)
    (root / "not_an_adapter" / "README.txt").write_text("weights went elsewhere\n")
    (root / "no_results").mkdir(exist_ok=True)
    # one prompt of 1 MB (rtp_list: one prompt per line)
    (root / "huge_prompt_rtp.csv").write_text(
        ("the quick brown fox jumps over the lazy dog " * 23_000)[:1_000_000] + "\n"
    )
    return {p.name: p for p in root.iterdir()}


def _other_base_adapters(root: Path, cache_dir: Path) -> None:
    """Real LoRA adapters of two other tiny bases: other layer shapes (hidden 32), and the same
    shapes with other weights (seed 1)."""
    from value_harms.models.loading import get_base_model
    from value_harms.models.lora import attach_lora, detach_lora

    for name, tiny in (("adapter_hidden32", {"hidden_size": 32}), ("adapter_seed1", {"seed": 1})):
        model, _ = get_base_model({"name": "tiny", "source": "tiny", "tiny": tiny}, str(cache_dir))
        peft_model = attach_lora(model, 4, 16, 0.0, ["q_proj", "v_proj"], seed=0)
        try:
            peft_model.save_pretrained(str(root / name))
        finally:
            detach_lora(peft_model)


# id -> (script, extra args, env, substrings the last stderr line must hold, hydra composition error?)
# {F} is the folder of bad files; {T} the case's tmp folder; {RO} a folder nobody can write to.
CASES: dict[str, tuple[str, list[str], dict, list[str], bool]] = {
    # --- config composition ---------------------------------------------------------------------------
    "key_typo": (
        "train.py",
        ["train.lora_rr=4"],
        {},
        ["unknown config key 'train.lora_rr'", "closest: train.lora_r", "--cfg job"],
        False,
    ),
    "key_typo_section": (
        "evaluate.py",
        ["benchmrk.limit=2"],
        {},
        ["unknown config key 'benchmrk.limit'", "closest: benchmark.limit"],
        False,
    ),
    "wrong_type": ("train.py", ["train.lora_r=abc"], {}, ["train.lora_r='abc'", "expected an integer"], False),
    "wrong_type_in_sweep": (
        "train.py",
        ["-m", "value_profile=Pow", "vim_stage.lr=1e-4,fast"],
        {},
        ["vim_stage.lr='fast'", "expected a number"],
        False,
    ),
    "glob_matches_nothing": (
        "train.py",
        ["-m", "value_profile=glob(Pwr*)"],
        {},
        ["value_profile=glob(Pwr*) matches no option", "0 jobs", "ls conf/value_profile/"],
        False,
    ),
    "sweep_job_negative_lr": (
        "train.py",
        ["-m", "value_profile=Pow", "vim_stage.lr=1e-4,-1e-4", *TRAIN],
        {},
        ["job 1 of 2", "vim_stage.lr=-0.0001", "expected a learning rate > 0"],
        False,
    ),
    # --- settings that give no meaningful result (checked before any model or data is loaded) -------
    "epochs_zero": (
        "train.py",
        ["value_profile=Pow", "vim_stage.epochs=0", *TRAIN],
        {},
        ["vim_stage.epochs=0", "0 trains nothing", "set e.g. vim_stage.epochs="],
        False,
    ),
    "max_steps_zero": (
        "train.py",
        ["value_profile=Pow", "trainer.max_steps=0", *TRAIN],
        {},
        ["trainer.max_steps=0", "trains nothing", "trainer.max_steps=-1"],
        False,
    ),
    "negative_lr": (
        "train.py",
        ["value_profile=Pow", "vim_stage.lr=-0.001", *TRAIN],
        {},
        ["vim_stage.lr=-0.001", "learning rate > 0", "vim_stage.lr=2e-5"],
        False,
    ),
    "batch_size_zero": (
        "train.py",
        ["value_profile=Pow", "vim_stage.batch_size=0", *TRAIN],
        {},
        ["vim_stage.batch_size=0", "integer >= 1"],
        False,
    ),
    "negative_temperature": (
        "evaluate.py",
        ["benchmark=rtp", "benchmark.temperature=-0.5", *EVAL],
        {},
        ["benchmark.temperature=-0.5", "temperature >= 0"],
        False,
    ),
    "zero_temperature_sampling": (
        "evaluate.py",
        ["benchmark=rtp", "benchmark.temperature=0", *EVAL],
        {},
        ["benchmark.temperature=0", "benchmark.do_sample=false"],
        False,
    ),
    "huge_prompt": (
        "evaluate.py",
        ["benchmark=rtp", "benchmark.path={F}/huge_prompt_rtp.csv", "generation.cache=false", *EVAL],
        {},
        ["1 prompt(s) do not fit", "context of 2048", "1,000,000 characters", "prompts are never cut"],
        False,
    ),
    # --- names that become folders ---------------------------------------------------------------------
    "unknown_engine_in_sweep": (
        "evaluate.py",
        ["-m", "generation.engine=hf,vlm", "benchmark=rtp"],
        {},
        ["job 1 of 2", "generation.engine='vlm'", "did you mean vllm?"],
        False,
    ),
    "profile_value_out_of_scale": (
        "train.py",
        ["value_profile=Pow", "value_profile.values.power=7", *TRAIN],
        {},
        ["value profile 'Pow': value 'Power' is 7, outside the scale", "[1, 6]"],
        False,
    ),
    "profile_name_escapes": (
        "train.py",
        ["-m", "value_profile=Pow", "value_profile.name=../../../../x", *TRAIN],
        {},
        ["value_profile.name='../../../../x'", "cannot be a folder name"],
        False,
    ),
    "profile_name_absolute": (
        "train.py",
        ["value_profile=Pow", "value_profile.name={T}/abs", *TRAIN],
        {},
        ["value_profile.name=", "cannot be a folder name", "without '/'"],
        False,
    ),
    "profile_name_300_chars": (
        "train.py",
        ["value_profile=Pow", "value_profile.name=" + "P" * 300, *TRAIN],
        {},
        ["value_profile.name='PPP", "300 characters long", "at most 100"],
        False,
    ),
    "run_label_nests": (
        "evaluate.py",
        ["benchmark=rtp", "run_label=a/b", *EVAL],
        {},
        ["run_label='a/b'", "cannot be a folder name"],
        False,
    ),
    # --- folders ---------------------------------------------------------------------------------------
    "readonly_output_dir": (
        "train.py",
        ["value_profile=Pow", "paths.output_dir={RO}/out", *TRAIN],
        {},
        ["paths.output_dir=", "is not writable", "set paths.output_dir to a writable folder"],
        False,
    ),
    # --- group options: closest names + where the options live ------------------------------------
    "unknown_profile": (
        "train.py",
        ["value_profile=Powr"],
        {},
        ["unknown value_profile 'Powr'", "closest: Pow", "ls conf/value_profile/"],
        False,
    ),
    "unknown_benchmark": (
        "evaluate.py",
        ["benchmark=rtpp"],
        {},
        ["unknown benchmark 'rtpp'", "closest: rtp", "ls conf/benchmark/"],
        False,
    ),
    "unknown_scorer": (
        "evaluate.py",
        ["scorer=perspektive"],
        {},
        ["unknown scorer 'perspektive'", "closest: perspective", "ls conf/scorer/"],
        False,
    ),
    "unknown_model": (
        "train.py",
        ["model=tinyy"],
        {},
        ["unknown model 'tinyy'", "closest: tiny", "ls conf/model/"],
        False,
    ),
    # --- value profiles -----------------------------------------------------------------------------
    "profile_out_of_range": (
        "train.py",
        ["value_profile=Pow", "value_profile.values.power=7", *TRAIN],
        {},
        ["'Power' is 7", "expected a number in [1, 6]"],
        False,
    ),
    "profile_nan": (
        "train.py",
        ["value_profile=Pow", "value_profile.values.power=nan", *TRAIN],
        {},
        ["'Power' is NaN", "expected a number in [1, 6]"],
        False,
    ),
    # --- training data ------------------------------------------------------------------------------
    "missing_data_dir": (
        "train.py",
        ["value_profile=Pow", "paths.data_dir=/nonexistent", *TRAIN],
        {},
        ["/nonexistent/vim/valueEval_10.csv", "does not exist", "data.path", "paths.data_dir"],
        False,
    ),
    "empty_dataset": (
        "train.py",
        ["value_profile=Pow", "data.path={F}/empty_valueEval_10.csv", *TRAIN],
        {},
        ["empty_valueEval_10.csv", "header but no rows", "data.path", "valueEval_10"],
        False,
    ),
    "malformed_dataset": (
        "train.py",
        ["value_profile=Pow", "data.path={F}/malformed_valueEval_10.csv", *TRAIN],
        {},
        ["missing column(s)", "'Universalism'", "data.path"],
        False,
    ),
    "missing_pvq_items": (
        "train.py",
        ["alignment.items_path=/nonexistent/pvq40.csv", "alignment.fallback_to_demo_items=false", *TRAIN],
        {},
        ["/nonexistent/pvq40.csv", "not found", "alignment.items_path"],
        False,
    ),
    # --- benchmarks ---------------------------------------------------------------------------------
    "non_utf8_benchmark": (
        "evaluate.py",
        ["benchmark=beavertails", "benchmark.path={F}/latin1_beavertails.csv", *EVAL],
        {},
        ["latin1_beavertails.csv", "not UTF-8", "line 2", "re-save the file as UTF-8"],
        False,
    ),
    "empty_benchmark_csv": (
        "evaluate.py",
        ["benchmark=beavertails", "benchmark.path={F}/empty_beavertails.csv", *EVAL],
        {},
        ["empty_beavertails.csv", "file is empty", "prompt,category", "benchmark.path"],
        False,
    ),
    "benchmark_limit_zero": (
        "evaluate.py",
        ["benchmark=rtp", "benchmark.limit=0", "scorer=profanity_check"],
        {},
        ["benchmark.limit", "positive integer"],
        False,
    ),
    "gated_hub_no_token": (
        "evaluate.py",
        ["benchmark=hex_phi", "benchmark.source=hub", *EVAL],
        {"HF_TOKEN": "", "HUGGING_FACE_HUB_TOKEN": "", "HF_HUB_OFFLINE": "1"},
        ["LLM-Tuning-Safety/HEx-PHI", "gated", "accept its licence", "HF_TOKEN", "benchmark.source=local"],
        False,
    ),
    "huge_max_new_tokens": (
        "evaluate.py",
        [
            "benchmark=rtp",
            "benchmark.limit=1",
            "benchmark.num_samples=1",
            "benchmark.max_new_tokens=100000000",
            "generation.cache=false",
            "scorer=profanity_check",
        ],
        {},
        [
            "benchmark.max_new_tokens=100000000",
            "exceeds the model's context of 2048",
            "set benchmark.max_new_tokens <=",
        ],
        False,
    ),
    # --- models / adapters --------------------------------------------------------------------------
    "missing_adapter": (
        "evaluate.py",
        ["value_profile=Uni", "benchmark=rtp", *EVAL],
        {},
        ["no trained adapter", "value_profile=Uni", "python train.py model=tiny", "adapter_dir="],
        False,
    ),
    "adapter_dir_without_config": (
        "evaluate.py",
        ["value_profile=Uni", "adapter_dir={F}/not_an_adapter", "benchmark=rtp", *EVAL],
        {},
        ["not_an_adapter", "no adapter_config.json", "point it at a trained adapter"],
        False,
    ),
    "adapter_other_architecture": (
        "evaluate.py",
        ["value_profile=Uni", "adapter_dir={F}/adapter_hidden32", "benchmark=rtp", "generation.cache=false", *EVAL],
        {},
        ["adapter_hidden32", "trained on another base model", "has 32 inputs", "has 64", "set model="],
        False,
    ),
    "adapter_other_weights": (
        "evaluate.py",
        ["value_profile=Uni", "adapter_dir={F}/adapter_seed1", "benchmark=rtp", "generation.cache=false", *EVAL],
        {},
        ["adapter_seed1", "trained on base model 'tiny-", "same layer shapes"],
        False,
    ),
    "offline_hub_id": (
        "evaluate.py",
        [
            "model.source=hub",
            "model.pretrained=value-harms-test/not-in-any-cache",
            "benchmark=rtp",
            "generation.cache=false",
            *EVAL,
        ],
        {"HF_HUB_OFFLINE": "1"},
        [
            "model.pretrained='value-harms-test/not-in-any-cache'",
            "not in the local Hugging Face cache",
            "huggingface-cli download",
        ],
        False,
    ),
    "bad_baseline_name": (
        "evaluate.py",
        ["baseline=icll", "benchmark=rtp", *EVAL],
        {},
        ["baseline='icll'", "auto, vanilla, vim, icl, benign"],
        False,
    ),
    "icl_without_profile": (
        "evaluate.py",
        ["baseline=icl", "value_profile=vanilla", "benchmark=rtp", *EVAL],
        {},
        ["baseline=icl needs a value profile", "value_profile=vanilla"],
        False,
    ),
    # --- scorers ------------------------------------------------------------------------------------
    "judge_without_key": (
        "evaluate.py",
        [
            "benchmark=beavertails",
            "scorer=llm_judge",
            "benchmark.limit=1",
            "benchmark.max_new_tokens=2",
            "generation.progress=false",
        ],
        {"JUDGE_API_KEY": ""},
        ["needs an API key", "$JUDGE_API_KEY"],
        False,
    ),
    # --- mitigations --------------------------------------------------------------------------------
    "unknown_disregard_value": (
        "evaluate.py",
        ["mitigation=value_prompt", "mitigation.disregard_values=[Powr]", "benchmark=rtp", *EVAL],
        {},
        ["mitigation.disregard_values", "'Powr'", "closest: Power", "Stimulation"],
        False,
    ),
    "auto_without_file": (
        "evaluate.py",
        ["mitigation=auto", "benchmark=rtp", *EVAL],
        {},
        ["mitigation.auto_file", "does not exist", "python analyze.py"],
        False,
    ),
    "missing_safety_prompt_file": (
        "evaluate.py",
        ["mitigation=safety_prompt", "mitigation.safety_prompt_file=/nonexistent/safety.txt", "benchmark=rtp", *EVAL],
        {},
        ["mitigation.safety_prompt_file", "/nonexistent/safety.txt", "does not exist", "leave it null"],
        False,
    ),
    # --- analysis -----------------------------------------------------------------------------------
    "analyze_without_results": (
        "analyze.py",
        ["analysis.inputs=[{F}/no_results]"],
        {},
        ["no results.json", "no_results", "run evaluate.py first", "analysis.inputs"],
        False,
    ),
}


def _args(case: str, tmp: Path, files: Path, cache_dir: Path, data_dir: Path, ro: Path | None = None) -> list[str]:
    script, extra, *_ = CASES[case]
    t = tmp / case
    base = [
        "model=tiny",
        "logger=none",
        f"paths.output_dir={t}/out",
        f"paths.store_dir={t}/store",
        f"paths.cache_dir={cache_dir}",
        f"paths.data_dir={data_dir}",
    ]
    flags = [a for a in extra if a.startswith("-")]  # -m before the overrides (argparse)
    return (
        flags
        + base
        + [
            a.replace("{F}", str(files)).replace("{T}", str(t)).replace("{RO}", str(ro))
            for a in extra
            if not a.startswith("-")
        ]
    )


# Run as subprocesses (the entry point as a user types it): Hydra composition errors, the group
# guard of the entry points, and a few task errors end to end (one per script / error family). The
# other cases go through `value_harms.runtime.cli.run_task(task, cfg)` in-process: the same code path the
# entry points take after composition (run_task turns user errors into "error: ..." + exit 2), at a
# fraction of the cost of importing torch in a fresh process each time.
CLI_CASES = (
    "key_typo",
    "key_typo_section",
    "wrong_type",
    "wrong_type_in_sweep",
    "glob_matches_nothing",
    "sweep_job_negative_lr",
    "profile_name_escapes",
    "profile_value_out_of_scale",
    "unknown_engine_in_sweep",
    "unknown_profile",
    "unknown_benchmark",
    "unknown_scorer",
    "unknown_model",
    "missing_data_dir",
    "non_utf8_benchmark",
    "unknown_disregard_value",
    "missing_adapter",
    "analyze_without_results",
)
IN_PROCESS_CASES = tuple(c for c in CASES if c not in CLI_CASES)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, cache_dir) -> Path:
    root = tmp_path_factory.mktemp("bad_files")
    _files(root)
    _other_base_adapters(root, cache_dir)
    return root


@pytest.fixture(scope="module")
def readonly_dir(tmp_path_factory):
    """A folder nobody can create files in: mode 0555, or for root (who ignores modes) the
    immutable attribute; skipped where neither works."""
    d = tmp_path_factory.mktemp("readonly")
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
        pytest.skip("root, and this file system has no immutable attribute: cannot make a read-only folder")
    try:
        yield d
    finally:
        subprocess.run(["chattr", "-i", str(d)], capture_output=True)


@pytest.fixture(scope="module")
def cli_outcomes(tmp_path_factory, bad_files, cache_dir, data_dir):
    """Run the subprocess cases once, two at a time."""
    tmp = tmp_path_factory.mktemp("bad_cli")

    def one(case):
        script, _, env, *_ = CASES[case]
        return case, run_script(script, _args(case, tmp, bad_files, cache_dir, data_dir), env_extra=env, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(pool.map(one, CLI_CASES))
    return tmp, done


def test_catalogue_is_large_enough():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_input_cli(case, cli_outcomes):
    tmp, done = cli_outcomes
    res = done[case]
    _check(case, res.returncode, res.stderr, tmp / case)
    if case in CHECKED_BEFORE_ANY_FOLDER:
        assert not (tmp / case / "out").exists(), f"{case}: a run folder was created before the check"


# Checked on the composed config by the Hydra callback, before Hydra creates the run folder.
CHECKED_BEFORE_ANY_FOLDER = (
    "profile_value_out_of_scale",
    "sweep_job_negative_lr",
    "profile_name_escapes",
    "unknown_engine_in_sweep",
)


@pytest.mark.parametrize("case", IN_PROCESS_CASES)
def test_bad_input_in_process(case, compose, tmp_path, bad_files, cache_dir, data_dir, monkeypatch, capsys, request):
    from value_harms.runtime.cli import run_task

    script, extra, env, *_ = CASES[case]
    ro = request.getfixturevalue("readonly_dir") if any("{RO}" in a for a in extra) else None
    for k, v in env.items():
        if v == "":
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)
    task = _task(script)
    cfg = compose(script.removesuffix(".py"), _args(case, tmp_path, bad_files, cache_dir, data_dir, ro))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_task(task, cfg)
    _check(case, exc.value.code, capsys.readouterr().err, tmp_path / case)


def _task(script: str):
    if script == "train.py":
        from value_harms.train.task import run_train

        return run_train
    if script == "evaluate.py":
        from value_harms.eval.task import run_evaluate

        return run_evaluate
    from value_harms.analysis.task import run_analyze

    return run_analyze


def _check(case: str, code, stderr: str, root: Path) -> None:
    _, _, _, expects, hydra_error = CASES[case]
    assert code not in (0, None), f"{case}: exit 0\n{stderr[-2000:]}"
    assert "Traceback" not in stderr, f"{case}: traceback\n{stderr[-3000:]}"
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert lines, f"{case}: nothing on stderr"
    if hydra_error:
        # Hydra's composition error: a few lines naming the key, then its HYDRA_FULL_ERROR hint.
        text = stderr
    else:
        assert code == 2, f"{case}: exit {code}\n{stderr[-2000:]}"
        text = lines[-1]
        assert text.startswith("error: "), f"{case}: last stderr line is {text!r}"
        assert len(text) < 600, f"{case}: message too long: {text!r}"
    for s in expects:
        assert s in text, f"{case}: {s!r} not in {text!r}"
    _assert_nothing_partial(root)


def _assert_nothing_partial(root: Path) -> None:
    store, out = root / "store", root / "out"
    if root.exists():
        outside = sorted(p.name for p in root.iterdir() if p.name not in ("out", "store"))
        assert not outside, f"written outside paths.output_dir / paths.store_dir: {outside}"
    if store.exists():
        bad = [
            p
            for p in store.rglob("*")
            if p.name
            in (
                "COMPLETE",
                "results.json",
                "train_result.json",
                "adapter_config.json",
                "adapter_model.safetensors",
                "samples.jsonl",
            )
        ]
        assert not bad, f"partial results left in the store: {bad}"
    if out.exists():
        assert not [p for p in out.rglob("*") if p.name in ("results.json", "train_result.json")]
        for st in out.rglob("status.json"):
            assert json.loads(st.read_text())["status"] == "failed", st


# --------------------------------------------------------------------------------------------------
# Not an error: empty continuations are scored and counted (in-process, same task function as CLI)


def test_empty_generations_are_counted_not_fatal(compose, tmp_path, cache_dir, data_dir):
    from value_harms.eval.task import run_evaluate
    from value_harms.runtime.cli import run_task

    cfg = compose(
        "evaluate",
        [
            "model=tiny",
            "logger=none",
            "generation.progress=false",
            "generation.cache=false",
            f"paths.output_dir={tmp_path}/out",
            f"paths.store_dir={tmp_path}/store",
            f"paths.cache_dir={cache_dir}",
            f"paths.data_dir={data_dir}",
            "benchmark=rtp",
            "benchmark.limit=3",
            "benchmark.num_samples=2",
            "benchmark.max_new_tokens=1",
            "scorer=profanity_check",
        ],
    )
    # One new token and a stop string for every character it could start with: all continuations
    # are cut to "" (the CLI equivalent is benchmark.stop=[' ','a','e',...]).
    cfg.benchmark.stop = list(string.printable) + ["\ufffd"] + [chr(c) for c in range(0xA0, 0x250)]
    res = run_task(run_evaluate, cfg)
    samples = [json.loads(x) for x in (Path(res["run_dir"]) / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6
    assert all(s["continuation"] == "" for s in samples), [s["continuation"] for s in samples]
    assert res["generation"]["empty"] == 6
    assert res["scorer"]["n"] == 6 and res["scorer"]["missing"] == 0  # scored (prompt + "."), not dropped
    assert res["metrics"]["overall"]["n_prompts"] == 3
    assert json.loads((Path(res["run_dir"]) / "status.json").read_text())["status"] == "complete"


# --------------------------------------------------------------------------------------------------
# File-name rules (names a command line cannot easily carry: control characters, backslashes)


@pytest.mark.parametrize(
    "name, ok",
    [
        ("Pow", True),
        ("close_Pow_3", True),
        ("my-profile.v2", True),
        ("P" * 100, True),
        ("a..b", True),
        ("P" * 101, False),
        ("", False),
        ("a/b", False),
        ("a\\b", False),
        ("..", False),
        ("/etc/passwd", False),
        ("tab\there", False),
        ("nl\nhere", False),
        ("nul\x00", False),
    ],
)
def test_file_safe_names(name, ok):
    from value_harms.config.validate import config_problems, name_problem

    why = name_problem(name, "value_profile.name")
    assert (why is None) == ok, (name, why)
    if not ok:
        assert why.startswith("value_profile.name=") and "\n" not in why, why
        cfg = OmegaConf.create({"value_profile": {"name": name}, "run_label": "x"})
        assert config_problems(cfg) == [why]
