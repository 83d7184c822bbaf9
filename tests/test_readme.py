"""README.md cannot drift from the code: every command of its ```bash blocks is run here (as written, or with
the tiny-model substitutions declared once below), expanded with `-m --cfg job` to the number of jobs it
launches, or listed in NOT_RUN with the reason; every `$ command` sample block is run and its lines compared
with what the command prints (`...` in a sample matches anything).

A new README command fails `test_every_readme_command_is_classified` until it is put in one of the tables.
The fast part (classification, samples, small expansions, the quick commands) is in the default suite; the
tiny-model train -> evaluate -> analyze sequence and the 154-profile expansions are marked slow."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.cli import ROOT, run_script

README = ROOT / "README.md"

# ---- (a) tiny-model substitutions, declared once ---------------------------------------------------------------
# Settings that change no result key (tracking, progress bars) for every train / evaluate run.
QUIET = ["logger=none", "trainer.enable_progress_bar=false"]
# A training command "on the tiny model": 4 steps of stage 1.
TINY_TRAIN = ["model=tiny", "debug=fast", "vim_stage=ag"]
# An evaluation on the tiny model: the same model / debug / stage, so the trained adapter matches; 4 prompts,
# 2 samples, 4 tokens; offline scorers: profanity_check for toxicity (Perspective needs a key, Detoxify a
# download) and the tiny model as a constrained local judge (the default judge needs JUDGE_API_KEY). 4 prompts x
# 2 samples: the README's own tiny sequence, since the analysis refuses to pool different RTP prompt sets.
TINY_EVAL = [
    *TINY_TRAIN,
    "benchmark.limit=4",
    "benchmark.num_samples=2",
    "benchmark.max_new_tokens=4",
    "scorer=profanity_check",
    "scorer.judge.backend=transformers",
    "scorer.judge.model=model:tiny",
    "scorer.judge.constrained=true",
    "scorer.judge.stand_in=true",
]
TINY = {"train.py": TINY_TRAIN, "evaluate.py": TINY_EVAL, "analyze.py": []}
# README arguments replaced in a run: a 155-profile sweep runs on two profiles here (its job count is checked
# in EXPANDED); README path placeholders name this test's store. Values are formatted with {out} (the output
# folder) and resolved as globs.
REPLACE = {
    "'value_profile=glob(*)'": "value_profile=vanilla,Pow",
    "outputs/store/train/smollm2_135m/full/Pow/<fp>/qa/adapter": "{out}/store/train/tiny/ag/Pow/*/ag/adapter",
    "outputs/multiruns/train/<sweep>": "{out}/multiruns/train/*",
    "outputs/multiruns/evaluate/2026-11-28_*": "{out}/multiruns/evaluate/*",
    "outputs/": "{out}/",
}

# ---- (b) commands not run, with the reason ------------------------------------------------------------------------
NOT_RUN = {
    "make test": "is the test suite itself",
    "make demo": "trains SmolLM2-135M for about 7 minutes; its steps run here on the tiny model",
    "python train.py model=llama2_7b trainer=gpu value_profile=Pow": "needs a GPU and the gated Llama-2 hub weights",
    "python train.py vim_stage=benign_alpaca vim_stage.instruct.source=local "
    "vim_stage.instruct.path=/data/alpaca.json": (
        "reads the user's Alpaca file (not shipped; the hub copy needs the network)"
    ),
    "python evaluate.py value_profile=Pow baseline=icl benchmark=hex_phi": "HEx-PHI is on the gated hub (HF_TOKEN)",
    "python evaluate.py vim_stage=benign_alpaca benchmark=beavertails": "needs the benign_alpaca adapter (above)",
    "python evaluate.py benchmark=beavertails benchmark.per_category=5 scorer=llm_judge "
    "scorer.judge.model=gpt-4o-mini": ("an OpenAI judge: JUDGE_API_KEY and the network"),
    "python analyze.py experiment=paper": "analyses the paper-scale results of the GPU sweep above",
    "make engine-env": "installs vLLM into its own venv (network)",
    "python evaluate.py -m experiment=demo value_profile=vanilla,Pow,Uni benchmark=rtp generation.engine=vllm": (
        "needs the engine environment (make test-engine covers it)"
    ),
    "make demo-vllm": "needs the engine environment and takes minutes",
    "make bench-engines": "needs the engine environment and takes minutes",
    "make slurm-up": "installs and starts a SLURM cluster (root)",
    "make test-slurm": "the SLURM suite on a real cluster",
    "make slurm-down": "stops the SLURM cluster",
    "export WANDB_API_KEY=...": "a secret the user sets",
    "make study": "the whole study through SLURM: hours of CPU (tests/test_study.py runs the runner on the tiny model)",
    "python -m value_harms.study status smollm2": (
        "exits 1 until the study is complete; tests/test_study.py runs it on a tiny study"
    ),
    "python -m value_harms.status outputs/study_smollm2": (
        "exits 1 until the study is complete; tests/test_study.py runs it on a tiny study's folder"
    ),
    "python -m value_harms.study report smollm2": (
        "rewrites docs/STUDY-smollm2.md from this machine's store; tests/test_study_report.py covers it"
    ),
    "WANDB_MODE=online python train.py -m value_profile=Pow,Uni": "W&B online: the network and a key",
    "python scripts/study_length_check.py outputs/study_smollm2/store/eval": (
        "reads this machine's study store; tests/test_length_check.py runs it on a small store"
    ),
}

# ---- (c) sweeps too large to run: expanded with `-m --cfg job`, number of jobs asserted ---------------------------
EXPANDED = {
    "python train.py -m 'value_profile=glob(*,exclude=vanilla)'": 154,
    "python train.py -m 'value_profile=glob(close_Pow*)'": 10,
    "python train.py -m value_profile=Uni vim_stage=ag train.lora_r=4,8,16 vim_stage.lr=1e-5,2e-5": 6,
    "python train.py -m experiment=paper 'value_profile=glob(*,exclude=vanilla)' hydra/launcher=slurm_gpu": 154,
    "python train.py -m experiment=paper vim_stage=benign_alpaca,benign_dolly,benign_grammar,benign_samsum "
    "hydra/launcher=slurm_gpu": 4,
    "python evaluate.py -m experiment=paper 'value_profile=glob(*)' benchmark=rtp,holisticbiasr,hex_phi,beavertails "
    "mitigation=none,safety_prompt,value_prompt,both hydra/launcher=slurm_gpu": 2480,
    "python evaluate.py -m experiment=paper baseline=icl 'value_profile=glob(*,exclude=vanilla)' "
    "benchmark=beavertails": 154,
    "python train.py -m model=tiny debug=fast vim_stage=ag 'value_profile=glob(*)'": 155,
    "python evaluate.py -m model=tiny debug=fast vim_stage=ag benchmark=rtp benchmark.limit=4 benchmark.num_samples=2 "
    "scorer=profanity_check 'value_profile=glob(*)'": 155,
    "python train.py -m hydra/launcher=slurm_gpu hydra.launcher.partition=gpu hydra.launcher.account=my_lab "
    "'hydra.launcher.setup=[module load cuda/12.1]' experiment=paper 'value_profile=glob(*,exclude=vanilla)'": 154,
    "python train.py -m hydra/launcher=slurm_cpu model=tiny debug=fast vim_stage=ag value_profile=Pow,Uni,Ach": 3,
}
# Printing a job's config takes about 0.16 s on 2 cores: sweeps up to FAST_EXPANSION_MAX jobs print every config
# in the default suite, up to SLOW_EXPANSION_MAX in the slow one; all are counted in-process (the 2,480-job sweep
# would take 7 minutes to print).
FAST_EXPANSION_MAX = 20
SLOW_EXPANSION_MAX = 200

# ---- (d) commands run: quick ones as written (default suite), the rest in dependency order in one tiny store ------
# command -> True when the tiny substitutions apply, False when it runs as written (paths and QUIET only).
QUICK = {
    "python train.py --cfg job value_profile=Self-Transcendence": False,
    "python train.py --help": False,
    "python train.py hydra/launcher=slurm_gpu --cfg hydra -p hydra.launcher": False,
    "python -m value_harms.profiles rebuild --ess $VALUE_HARMS_DATA_DIR/unintended_harms/ess_distribution.csv "
    "--shipped-data-dir $VALUE_HARMS_DATA_DIR": False,
    "python -m value_harms.estimate experiment=paper": False,
    "python -m value_harms.estimate experiment=paper --engine vllm": False,
    "python -m value_harms.study run smollm2 --dry-run": False,
}
STAGES = [
    {  # training
        "python train.py value_profile=Pow": True,
        "python train.py -m value_profile=vanilla,Pow,Uni": True,
        "python train.py value_profile=Uni value_profile.name=Uni_pow3 value_profile.kind=custom "
        "value_profile.values.power=3": True,
        "python train.py -m model=tiny debug=fast vim_stage=ag 'value_profile=glob(*)'": False,
    },
    {  # evaluation of what was trained
        "python evaluate.py -m benchmark=rtp,beavertails value_profile=vanilla,Pow mitigation=none,value_prompt": True,
        "python evaluate.py adapter_dir=outputs/store/train/smollm2_135m/full/Pow/<fp>/qa/adapter benchmark=rtp": True,
        "python evaluate.py benchmark=rtp benchmark.limit=100 benchmark.num_samples=5 generation.batch_size=16": True,
        "python evaluate.py mode=audit scorer=detoxify": True,
        "python evaluate.py -m model=tiny debug=fast vim_stage=ag benchmark=rtp benchmark.limit=4 "
        "benchmark.num_samples=2 scorer=profanity_check 'value_profile=glob(*)'": False,
        "python -m value_harms.status outputs/multiruns/train/<sweep>": False,
    },
    {  # analysis of the store
        "python analyze.py": False,
        "python analyze.py 'analysis.inputs=[outputs/multiruns/evaluate/2026-11-28_*]' "
        "analysis.standardize=true": False,
        "python analyze.py analysis.higher_order=true analysis.alpha=0.1": False,
    },
    {  # the automatic mitigation the analysis wrote
        "python evaluate.py -m value_profile=Pow,Uni benchmark=beavertails mitigation=auto": True,
    },
]
# Commands whose README comment shows what they print: every number in that comment must be in the output.
PRINTS_COMMENT = {
    "python -m value_harms.profiles rebuild --ess $VALUE_HARMS_DATA_DIR/unintended_harms/ess_distribution.csv "
    "--shipped-data-dir $VALUE_HARMS_DATA_DIR",
    "python -m value_harms.estimate experiment=paper",
    "python -m value_harms.estimate experiment=paper --engine vllm",
}


# ---- parsing README.md ----------------------------------------------------------------------------------------------
def _fences(lang: str) -> list[str]:
    """The bodies of the README's fenced blocks opened with ```<lang> (lang "" = a plain block)."""
    bodies: list[str] = []
    body: list[str] | None = None
    opened = ""
    for line in README.read_text().splitlines():
        if line.startswith("```") and body is None:
            body, opened = [], line[3:].strip()
        elif line.startswith("```"):
            if opened == lang:
                bodies.append("\n".join(body) + "\n")
            body = None
        elif body is not None:
            body.append(line)
    return bodies


def readme_commands() -> dict[str, str]:
    """Every command of the ```bash blocks (continuations joined, trailing `# comments` dropped) -> its comment:
    the trailing one plus the comment lines right after it (where the README shows what it prints)."""
    commands: dict[str, str] = {}
    for block in _fences("bash"):
        last = None
        for line in re.sub(r"\s*\\\n\s*", " ", block).splitlines():
            s = line.strip()
            if s.startswith("#") and last is not None and line.startswith("#"):
                commands[last] += " " + s.lstrip("# ")
                continue
            last = None
            if not s or s.startswith("#"):
                continue
            cmd, comment = (re.split(r"\s+#\s*", s, maxsplit=1) + [""])[:2]
            last = cmd.strip()
            commands[last] = comment.strip()
    return commands


def readme_samples() -> list[tuple[str, list[str]]]:
    """The `$ command` sample blocks: (command, the output lines shown under it)."""
    samples: list[tuple[str, list[str]]] = []
    for block in _fences(""):
        if not block.startswith("$ "):
            continue
        for line in block.splitlines():
            if line.startswith("$ "):
                samples.append((line[2:].strip(), []))
            elif line.strip():
                samples[-1][1].append(line.rstrip())
    return samples


def sample_matches(shown: str, printed: str) -> bool:
    """A sample line matches a printed line exactly, `...` standing for any text."""
    return re.fullmatch(".*?".join(re.escape(p) for p in shown.split("...")), printed) is not None


# ---- running a README command ----------------------------------------------------------------------------------------
def _env(out: Path, cache_dir: Path, data_dir: Path) -> dict[str, str]:
    return {
        "VALUE_HARMS_OUTPUT_DIR": str(out),
        "VALUE_HARMS_CACHE_DIR": str(cache_dir),
        "VALUE_HARMS_DATA_DIR": str(data_dir),
    }


def to_argv(command: str, out: Path, env: dict[str, str], tiny: bool) -> list[str]:
    """The README command as an argv: REPLACE applied (globs resolved), $VARS expanded, substitutions appended."""
    for old, new in REPLACE.items():
        pattern = re.compile(r"(?<![\w/])" + re.escape(old))  # `outputs/` only where a README path starts
        if pattern.search(command):
            new = new.format(out=out)
            if "*" in new and not new.startswith("value_profile") and "evaluate/*" not in new:
                hits = sorted(Path("/").glob(new.lstrip("/")))  # analysis.inputs takes the glob itself
                assert hits, f"{command}: nothing at {new} (run order?)"
                new = str(hits[-1])
            command = pattern.sub(lambda _m, new=new: new, command)
    words = shlex.split(re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), m.group(0)), command))
    assert words[0] == "python", command
    runs = words[1] in ("train.py", "evaluate.py") and not {"--cfg", "--help"} & set(words)
    extra = (TINY.get(words[1], []) if tiny else []) + (QUIET if runs else [])
    keys = {a.split("=", 1)[0] for a in extra}  # the substitutions replace the README's value of the same key
    return [words[1], *(w for w in words[2:] if w.split("=", 1)[0] not in keys), *extra]


def run_readme(command: str, out: Path, env: dict[str, str], tiny: bool = False) -> subprocess.CompletedProcess:
    argv = to_argv(command, out, env, tiny)
    if argv[0] == "-m":
        full = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", **env}
        return subprocess.run(
            [sys.executable, *argv], cwd=ROOT, env=full, capture_output=True, text=True, timeout=600, check=False
        )
    return run_script(argv[0], argv[1:], env_extra=env)


def _ok(command: str, res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, f"README command failed (exit {res.returncode}): {command}\n{res.stderr[-3000:]}"


@pytest.fixture
def env(tmp_path, cache_dir, data_dir) -> dict[str, str]:
    return _env(tmp_path / "outputs", cache_dir, data_dir)


# ---- the tests -----------------------------------------------------------------------------------------------------
def test_every_readme_command_is_classified():
    commands = set(readme_commands())
    run = set(QUICK) | {c for stage in STAGES for c in stage}
    known = run | set(NOT_RUN) | set(EXPANDED)
    assert not commands - known, f"README commands neither run nor listed in NOT_RUN: {sorted(commands - known)}"
    assert not known - commands, f"table entries that are no README command (stale): {sorted(known - commands)}"
    assert not set(NOT_RUN) & (run | set(EXPANDED)), "a command is both run and not run"
    assert PRINTS_COMMENT <= set(QUICK)


@pytest.mark.parametrize("sample", readme_samples(), ids=lambda s: s[0])
def test_readme_sample_output_is_what_the_command_prints(sample, env):
    command, shown = sample
    out = Path(env["VALUE_HARMS_OUTPUT_DIR"])
    res = run_readme(command, out, env)
    printed = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    assert len(printed) == len(shown), f"{command}: README shows {shown}, the command prints {printed}"
    for s, p in zip(shown, printed, strict=True):
        assert sample_matches(s, p), f"{command}:\n README: {s}\n prints: {p}"
    if shown[0].startswith("error:"):
        assert res.returncode == 2, res.returncode
        assert not out.exists() or not any(out.iterdir()), f"{command}: an error, yet it wrote {list(out.rglob('*'))}"


@pytest.mark.parametrize("command", list(QUICK))
def test_quick_readme_command_runs_as_written(command, env):
    res = run_readme(command, Path(env["VALUE_HARMS_OUTPUT_DIR"]), env, QUICK[command])
    _ok(command, res)
    if command in PRINTS_COMMENT:
        comment = readme_commands()[command]
        numbers = re.findall(r"\d+(?:[.,/]\d+)*", comment)
        printed = res.stdout + res.stderr
        assert numbers, f"{command}: the README comment shows no figure: {comment!r}"
        missing = [n for n in numbers if n not in printed]
        assert not missing, f"{command}: the README says {comment!r}; not printed: {missing}\n{printed}"


def _expansion(command: str, env: dict[str, str]) -> None:
    words = shlex.split(command)  # as written: no REPLACE (the full sweep is what is counted)
    res = run_script(words[1], ["--cfg", "job", *words[2:], *QUIET], env_extra=env)
    _ok(command, res)
    heads = re.findall(r"^# job (\d+) of (\d+): ", res.stdout, re.M)
    n = EXPANDED[command]
    assert heads and {int(t) for _, t in heads} == {n} and len(heads) == n, (
        f"{command}: README implies {n} jobs, `-m --cfg job` lists {len(heads)}"
    )


def test_readme_sweeps_have_the_declared_number_of_jobs():
    """The job count of every EXPANDED sweep, by the expansion `-m --cfg job` and the launch check use."""
    from value_harms.config.sweep import expand_overrides

    for command, n in EXPANDED.items():
        overrides = [w for w in shlex.split(command)[2:] if not w.startswith("-")]
        assert len(expand_overrides(overrides)) == n, command


@pytest.mark.parametrize("command", [c for c, n in EXPANDED.items() if n <= FAST_EXPANSION_MAX])
def test_small_readme_sweep_prints_every_jobs_config(command, env):
    _expansion(command, env)


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c, n in EXPANDED.items() if FAST_EXPANSION_MAX < n <= SLOW_EXPANSION_MAX])
def test_large_readme_sweep_prints_every_jobs_config(command, env):
    _expansion(command, env)


@pytest.mark.slow
def test_readme_train_evaluate_analyze_sequence_runs_in_one_store(env):
    """Each stage's commands run two at a time (as a user with two terminals); stages in dependency order."""
    out = Path(env["VALUE_HARMS_OUTPUT_DIR"])
    with ThreadPoolExecutor(max_workers=2) as pool:
        for stage in STAGES:
            done = list(pool.map(lambda c, stage=stage: (c, run_readme(c, out, env, stage[c])), list(stage)))
            for command, res in done:
                _ok(command, res)
    assert (out / "analysis" / "auto_mitigation.json").is_file()
