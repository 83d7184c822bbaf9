"""Experiment tracking with Weights & Biases (optional; results never depend on it).

A run logs its fully resolved config plus flat keys for every value intensity (`value/Power`, ...)
so the dashboard can filter and plot runs by value. W&B is offline unless the user asks otherwise;
if it fails to start, the job goes on and writes its local results (a warning says so).

Online without a network: `wandb.init` waits `init_timeout` (W&B's default 90 s) before giving up.
Here one HTTP request to the W&B server (connect 2 s, answer 2 s, no retry; through the project's one
HTTP layer, value_harms/net.py) comes first; no answer, or an
online `wandb.init` that does not start within `WANDB_INIT_TIMEOUT` seconds (default 6), and the job
logs OFFLINE (one warning; `wandb sync` uploads it later). The rest of the process then goes offline
at once for that server.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

from value_harms.core.names import slug
from value_harms.errors import ValueHarmsError
from value_harms.net import GaveUp, HttpClient, HttpSettings

log = logging.getLogger(__name__)

# Names of environment variables that hold secrets: never copied anywhere.
SECRET_ENV_VARS = ("WANDB_API_KEY", "PERSPECTIVE_API_KEY", "OPENAI_API_KEY", "JUDGE_API_KEY", "HF_TOKEN")

DEFAULT_INIT_TIMEOUT_S = 6.0  # online wandb.init; then offline. Bounds a job's W&B stall under 10 s.
# The one request that checks the server answers at all: connect 2 s, answer 2 s, one attempt.
REACH_HTTP = HttpSettings(read_timeout_s=2.0, connect_timeout_s=2.0, max_retries=0)
# W&B servers (base URLs) that online runs could not reach in this process: why, for the warning.
_UNREACHABLE: dict[str, str] = {}


def init_timeout_s() -> float:
    """`WANDB_INIT_TIMEOUT` when set (W&B's own variable), else 6 s."""
    try:
        value = float(os.environ.get("WANDB_INIT_TIMEOUT") or DEFAULT_INIT_TIMEOUT_S)
    except ValueError:
        return DEFAULT_INIT_TIMEOUT_S
    return value if value > 0 else DEFAULT_INIT_TIMEOUT_S


def _unreachable(server: str) -> str | None:
    """Why the W&B server does not answer HTTP at all (refused, no route, silent), or None when it
    answers anything (any status: wandb.init then checks the key itself)."""
    client = HttpClient("W&B", server, REACH_HTTP)
    try:
        client.call(lambda resp: None, method="GET", allow_redirects=False)
    except GaveUp as exc:  # no answer: refused, no route, silent (the reason names which, never the URL)
        return f"is unreachable ({exc.reason})"
    except ValueHarmsError as exc:  # not a URL requests can send to, or the endpoint's breaker is open
        return f"is unreachable ({type(exc).__name__})"
    finally:
        client.close()
    return None


def _no_telemetry_to(server: str) -> None:
    """Stop W&B's own usage telemetry for this process: it is sent to the same server at exit, and
    an unreachable one costs 10 s more there (wandb 0.31 `opentelemetry_proxy`, 10 s HTTP timeout)."""
    try:
        from wandb.analytics.opentelemetry import opentelemetry_proxy

        opentelemetry_proxy.disable()
    except Exception:  # noqa: BLE001 - another wandb version: nothing to switch off
        log.debug("W&B telemetry switch not found; %s may be contacted at exit", server)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for name in SECRET_ENV_VARS:  # W&B never echoes the key, but make sure
        secret = os.environ.get(name)
        if secret and len(secret) >= 8:
            text = text.replace(secret, "***")
    return f"{type(exc).__name__}: {text[:200]}"


def wandb_mode(logger_cfg: Mapping[str, Any]) -> str:
    """WANDB_MODE in the environment wins over the config (offline by default)."""
    return os.environ.get("WANDB_MODE") or str(logger_cfg.get("mode") or "offline")


def start_run(
    logger_cfg: Mapping[str, Any],
    *,
    run_dir: str | os.PathLike,
    job_type: str,
    name: str,
    group: str,
    config: Mapping[str, Any],
    tags: list[str] | None = None,
):
    """Start a W&B run, or return None when logging is off or W&B cannot start."""
    if logger_cfg.get("kind", "none") != "wandb":
        return None
    mode = wandb_mode(logger_cfg)
    if mode == "disabled":
        return None
    try:
        import wandb

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        kwargs = dict(
            project=logger_cfg.get("project") or "value-harms",
            entity=logger_cfg.get("entity"),
            dir=str(run_dir),
            name=name,
            group=group,
            job_type=job_type,
            tags=sorted(set(list(logger_cfg.get("tags") or []) + list(tags or []))),
            config=dict(config),
            reinit="finish_previous",
        )
        quiet = dict(silent=True, console="off", x_disable_stats=True)
        if mode in ("online", "shared", "run"):
            server = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
            why = _UNREACHABLE.get(server)
            if why is not None:
                why = f"{why} (earlier in this process)"
            else:
                why = _unreachable(server)
                if why is None:
                    timeout = init_timeout_s()
                    try:
                        return wandb.init(**kwargs, mode=mode, settings=wandb.Settings(init_timeout=timeout, **quiet))
                    except Exception as exc:  # server trouble, key rejected: log offline instead
                        why = f"did not start ({_one_line(exc)}; init_timeout {timeout:g} s)"
                _UNREACHABLE[server] = why
                _no_telemetry_to(server)
            log.warning(
                "W&B online at %s %s; this job logs offline to %s (upload it later with "
                "`wandb sync`); results are unaffected",
                server,
                why,
                run_dir,
            )
            mode = "offline"
        return wandb.init(**kwargs, mode=mode, settings=wandb.Settings(**quiet))
    except Exception as exc:  # W&B must never cost local results
        log.warning("W&B did not start (%s: %s); results are still written to %s", type(exc).__name__, exc, run_dir)
        return None


def safe_log(run, data: Mapping[str, Any], *, summary: bool = False) -> None:
    """Log to W&B if a run exists; a W&B failure is a warning, never a lost result."""
    if run is None:
        return
    try:
        if summary:
            for key, value in data.items():
                run.summary[key] = value
        else:
            run.log(dict(data))
    except Exception as exc:
        log.warning("W&B logging failed (%s: %s); local results are unaffected", type(exc).__name__, exc)


def log_table(run, key: str, rows: list[Mapping[str, Any]]) -> None:
    """Log a list of flat dicts as a W&B Table."""
    if run is None or not rows:
        return
    try:
        import wandb

        columns = list(rows[0].keys())
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        run.log({key: table})
    except Exception as exc:
        log.warning("W&B table %s not logged (%s)", key, exc)


def log_artifact_dir(run, folder: str | os.PathLike, *, name: str, type_: str, metadata: Mapping | None = None) -> None:
    """Attach a folder (e.g. a LoRA adapter) to the run as an artifact."""
    if run is None:
        return
    try:
        import wandb

        art = wandb.Artifact(name=name, type=type_, metadata=dict(metadata or {}))
        art.add_dir(str(folder))
        run.log_artifact(art)
    except Exception as exc:
        log.warning("W&B artifact %s not logged (%s)", name, exc)


def lightning_logger(run, prefix: str):
    """A Lightning WandbLogger on `run` whose write failures are warnings, never a lost training run
    (Lightning calls the logger inside the fit loop, where an exception would end the job)."""
    from lightning.pytorch.loggers import WandbLogger

    class _SafeWandbLogger(WandbLogger):
        _warned = False

        def _guard(self, what, fn, *args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "W&B logging failed (%s: %s); training goes on and local results are unaffected",
                        type(exc).__name__,
                        exc,
                    )
                return None

        def log_metrics(self, metrics, step=None):
            return self._guard("metrics", super().log_metrics, metrics, step)

        def log_hyperparams(self, params, *args, **kwargs):
            return self._guard("hyperparams", super().log_hyperparams, params, *args, **kwargs)

        def after_save_checkpoint(self, checkpoint_callback):
            return self._guard("checkpoint", super().after_save_checkpoint, checkpoint_callback)

    return _SafeWandbLogger(experiment=run, prefix=prefix)


def finish_run(run, *, failed: bool = False) -> None:
    if run is None:
        return
    try:
        run.finish(exit_code=1 if failed else 0)
    except Exception as exc:
        log.warning("W&B finish failed (%s)", exc)


def artifact_safe_name(text: str) -> str:
    """W&B artifact names allow ASCII letters, digits, dashes, underscores and dots: the name rule
    core.names.slug with '-' between the parts it keeps."""
    return slug(text, "-")
