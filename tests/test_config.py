"""The config tree: every option composes, schemas reject typos, the CLI habits work."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from helpers.cli import CONF, run_script

PRIMARY = ["train", "evaluate"]
# Groups that the primary config selects from (the domain and infrastructure folders of conf/).
# (`subset` is picked by interpolation from the experiment and benchmark: tested below.)
GROUPS = sorted(
    p.name for p in CONF.iterdir() if p.is_dir() and p.name not in {"hydra", "local", "value_profile", "subset"}
)


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("primary", PRIMARY)
@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes(compose, primary, group):
    for option in _options(group):
        cfg = compose(primary, [f"{group}={option}"])
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        if "_target_" in cfg.trainer:
            # accelerator=cpu: GPU presets must still build their Trainer on a CPU-only machine
            trainer = instantiate(cfg.trainer, accelerator="cpu", enable_progress_bar=False, logger=False)
            assert trainer.max_steps == cfg.trainer.max_steps


@pytest.mark.parametrize("primary", PRIMARY)
def test_every_value_profile_composes(compose, primary):
    from value_harms.core.profiles import profile_from_cfg

    names = _options("value_profile")
    assert len(names) == 155
    for name in names:
        cfg = compose(primary, [f"value_profile={name}"])
        assert profile_from_cfg(cfg.value_profile).name == name


def test_unknown_key_fails_at_composition(compose):
    with pytest.raises(ConfigCompositionException, match="lora_rr"):
        compose("train", ["train.lora_rr=3"])


def test_wrong_type_fails_at_composition(compose):
    with pytest.raises(ConfigCompositionException) as err:
        compose("train", ["value_profile=Pow", "value_profile.values.power=high"])
    assert isinstance(err.value.__cause__, (ValidationError, ConfigKeyError))


def test_out_of_range_value_rejected_before_loading(compose):
    from value_harms.core.profiles import profile_from_cfg
    from value_harms.errors import ProfileError

    cfg = compose("train", ["value_profile=Pow", "value_profile.values.power=7"])
    with pytest.raises(ProfileError, match=r"Power.*7.*\[1, 6\]"):
        profile_from_cfg(cfg.value_profile)


def test_unknown_profile_answers_closest_names():
    res = run_script("train.py", ["value_profile=close_Pow_33"])
    assert res.returncode == 2
    line = res.stderr.strip().splitlines()[-1]
    assert "unknown value_profile 'close_Pow_33'" in line and "close_Pow_3" in line


def test_unknown_option_of_other_groups():
    res = run_script("train.py", ["model=smollm", "--cfg", "job"])
    assert res.returncode == 2 and "smollm2_135m" in res.stderr


def test_cli_cfg_job_and_help():
    res = run_script("train.py", ["--cfg", "job", "model=tiny", "value_profile=Self-Transcendence"])
    assert res.returncode == 0, res.stderr
    cfg = OmegaConf.create(res.stdout)
    assert cfg.value_profile["values"].benevolence == 6.0 and cfg.value_profile["values"].power == 1.0
    res = run_script("train.py", ["--help"])
    assert res.returncode == 0 and "value_profile" in res.stdout and "vim_stage" in res.stdout


def test_cli_multirun_cfg_prints_every_job_and_bad_pairs_get_one_line():
    """`-m --cfg job` prints each job's config (Hydra itself raises a ValueError traceback); `-m --info` or
    `-m --run` is one line and exit 2."""
    for script in ("train.py", "evaluate.py"):
        res = run_script(script, ["-m", "--cfg", "job", "model=tiny", "value_profile=Pow,Uni"])
        assert res.returncode == 0, res.stderr[-2000:]
        parts = res.stdout.split("# job ")[1:]
        assert [p.splitlines()[0] for p in parts] == [
            "0 of 2: model=tiny value_profile=Pow",
            "1 of 2: model=tiny value_profile=Uni",
        ]
        cfgs = [OmegaConf.create(p.split("\n", 1)[1]) for p in parts]
        assert [c.value_profile.name for c in cfgs] == ["Pow", "Uni"] and "hydra" not in cfgs[0]
    res = run_script("train.py", ["-m", "--info", "model=tiny"])
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: -m cannot be combined with --info (Hydra runs one mode at a time); drop one"
    ]


def test_glob_sweep_expands_to_all_profiles():
    """`-m 'value_profile=glob(*,exclude=vanilla)'` selects the 154 study profiles, as Hydra expands it."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        options = GlobalHydra.instance().config_loader().get_group_options("value_profile")
    GlobalHydra.instance().clear()
    ov = OverridesParser.create().parse_overrides(["value_profile=glob(*,exclude=vanilla)"])[0]
    assert ov.is_sweep_override()
    from value_harms.core.profiles import paper_order

    assert sorted(ov.value().filter(options)) == sorted(paper_order())
    close = OverridesParser.create().parse_overrides(["value_profile=glob(close_Pow*)"])[0]
    assert len(close.value().filter(options)) == 10


@pytest.mark.parametrize("benchmark", [b for b in _options("benchmark") if b != "pvq"])
def test_demo_experiment_subsets_each_benchmark(compose, benchmark):
    cfg = compose("evaluate", ["experiment=demo", f"benchmark={benchmark}"])
    assert cfg.benchmark.limit is not None or cfg.benchmark.per_category is not None
    assert compose("evaluate", [f"benchmark={benchmark}"]).benchmark.limit in (None, 3000)
