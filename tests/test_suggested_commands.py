"""The commands the project prints for the user to run, run as printed: a missing adapter's
`python train.py ...` reproduces the evaluate config's training key exactly, and an edit of a profile's
values needs a profile to edit."""

from __future__ import annotations

import re
import shlex

from helpers.cli import run_script


def test_missing_adapter_command_runs_as_printed_and_trains_the_evaluated_adapter(tmp_path, cache_dir, data_dir):
    common = [
        "model=tiny",
        "debug=fast",
        "trainer.enable_progress_bar=false",
        "alignment.enabled=false",
        f"paths.output_dir={tmp_path}/out",
        f"paths.store_dir={tmp_path}/store",
        f"paths.cache_dir={cache_dir}",
        f"paths.data_dir={data_dir}",
        "logger=none",
    ]
    ev = ["benchmark=rtp", "benchmark.limit=2", "benchmark.num_samples=1", "benchmark.max_new_tokens=4"]
    edit = ["value_profile=Pow", "value_profile.values.power=3"]
    first = run_script("evaluate.py", [*common, *ev, *edit])
    assert first.returncode == 2, first.stderr[-2000:]
    m = re.search(r"training key (\w+)\); run `(python train.py [^`]*)`", first.stderr)
    assert m, first.stderr[-2000:]
    key, command = m.groups()
    argv = shlex.split(command)
    assert "value_profile=Pow" in argv and "value_profile.values.power=3" in argv
    trained = run_script("train.py", argv[2:])
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert list((tmp_path / "store" / "train").glob(f"tiny/*/Pow/{key}/COMPLETE")), "not filed under the printed key"
    again = run_script("evaluate.py", [*common, *ev, *edit])
    assert again.returncode == 0, again.stderr[-3000:]


def test_editing_the_vanilla_profiles_values_is_one_line():
    for script in ("train.py", "evaluate.py"):
        res = run_script(script, ["value_profile.values.power=3"])
        assert res.returncode == 2
        assert res.stderr.strip().splitlines() == [
            "error: value_profile.values.power=3: value_profile=vanilla (the default) has no values to change (it is "
            "the untrained base model); start from a profile, e.g. value_profile=Uni value_profile.values.power=3 "
            "value_profile.name=Uni_custom value_profile.kind=custom"
        ]


def test_a_sweep_that_includes_vanilla_cannot_edit_its_values():
    res = run_script("train.py", ["-m", "model=tiny", "value_profile=vanilla,Pow", "value_profile.values.power=3"])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: value_profile.values.power=3: value_profile=vanilla")
