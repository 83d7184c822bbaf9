"""Every user-facing error of value-harms, under one base class.

An error here describes bad input or an unusable setting, and its message is one line that names the
bad value and what was expected. The entry points (train.py, evaluate.py, analyze.py and the tools)
catch `ValueHarmsError` (plus the operating system's own FileNotFoundError / PermissionError, which
name the path) and print `error: <message>` with exit status 2; anything else is a bug and keeps its
traceback. Each class also derives from the builtin it replaced (ValueError or RuntimeError), so code
that caught the builtin keeps working.

This module imports nothing of the package: any module may raise these.
"""

from __future__ import annotations


class ValueHarmsError(Exception):
    """Base of every error the command line reports in one line (exit status 2)."""


# ----------------------------------------------------------------------------------- configuration
class ConfigError(ValueHarmsError, ValueError):
    """A composed config that cannot give a meaningful result (one-line message)."""


class UnsafeNameError(ValueHarmsError, ValueError):
    """A config name that cannot be a single folder name."""


class SweepError(ValueHarmsError, ValueError):
    """The folder is not a Hydra multirun folder the status tool can read."""


# ------------------------------------------------------------------------------ inputs of a study
class ProfileError(ValueHarmsError, ValueError):
    """A value profile that is unknown, malformed or out of range (message is one line)."""


class DataError(ValueHarmsError, ValueError):
    """A data file or table that does not have the expected shape; the message is one line."""


class ModelError(ValueHarmsError, ValueError):
    """A model configuration that cannot be loaded (one-line message)."""


class BenchmarkError(ValueHarmsError, ValueError):
    """A benchmark config or prompt file that cannot be used; the message is one line and says the fix."""


class PromptError(ValueHarmsError, ValueError):
    """A mitigation / persona prompt setting that cannot be used (unknown value, empty prompt file)."""


# ------------------------------------------------------------------------------------- evaluation
class EvaluationError(ValueHarmsError, ValueError):
    """Bad evaluation input (unknown variant, missing adapter, scorer/benchmark mismatch)."""


class BiasBaselineError(EvaluationError):
    """The configured bias-score baseline cannot be resolved (bad value, no stored vanilla result)."""


# ---------------------------------------------------------------------------------------- scoring
class ScorerError(ValueHarmsError, RuntimeError):
    """Unrecoverable scoring failure (e.g. credential rejected, no backend): stop the run."""


class ScorerUnavailable(ScorerError):
    """A backend cannot be built here (no key, no weights, package missing): a chain may fall back."""


class EndpointUnreachable(ScorerUnavailable):
    """A network scorer's endpoint stopped answering (connection refused / no route / timeouts) and
    its circuit breaker is open: no more requests to it in this job. A chain falls back; a scorer
    without fallback (the LLM judge) stops the run with this one-line message."""

    def __init__(self, endpoint: str, reason: str, what: str = "endpoint"):
        super().__init__(
            f"{what} {endpoint} unreachable: {reason}; not called again in this job "
            f"(scorer.breaker.* sets when a network scorer is given up)"
        )
        self.endpoint = endpoint
        self.reason = reason


class EngineError(ValueHarmsError, RuntimeError):
    """The generation engine (a vLLM / OpenAI-compatible server) cannot be started, reached or used;
    the message is one line (a start-up failure adds the tail of the server's log)."""


class CalibrationError(ScorerError):
    """The calibration data cannot be found or read (a one-line reason naming the path)."""


# --------------------------------------------------------------------------------------- analysis
class AnalysisError(ValueHarmsError, ValueError):
    """Results that cannot be analysed together (mixed scorers or benchmark versions, nothing found)."""
