"""saekit's errors: one base, `SaekitError`, and one subclass per area.

Each keeps `ValueError` (or `RuntimeError`) as a second base so code that catches those still works.
Every message names the problem and the fix; the command line prints it without a traceback.
"""

from __future__ import annotations


class SaekitError(Exception):
    """The base of every error saekit raises on purpose; catch this to catch them all."""


class ConfigError(SaekitError, ValueError):
    """A config value is invalid. The message names the field and the fix."""


class CorpusError(SaekitError, ValueError):
    """An empty or unusable text source; the message names the fix."""


class FeatureError(SaekitError, ValueError):
    """Bad input to a feature analysis; the message names the problem and the fix."""


class HarvestError(SaekitError, ValueError):
    """Activations that cannot be used (NaN/inf) or a harvest that cannot start; names the fix."""


class HookPointError(SaekitError, ValueError):
    """An unknown or out-of-range hook point; the message lists the valid ones."""


class InteropError(SaekitError, ValueError):
    """A folder in a format, architecture or setting saekit cannot read exactly; the message says why."""


class InterventionError(SaekitError, ValueError):
    """An edit that cannot apply (bad feature index, NaN strength, SAE from another model...); names the fix."""


class ModelLoadError(SaekitError, ValueError):
    """A model name, path or object that saekit cannot load; the message says what to pass instead."""


class ModelInputError(SaekitError, ValueError, TypeError):
    """A bad argument to a model run (prompt, token ids, generation settings, edits); names what to pass."""


class SaeError(SaekitError, ValueError):
    """Input an SAE cannot take (activations of the wrong width or rank, a bad scale); names the fix."""


class WidgetError(SaekitError, ValueError, TypeError):
    """A widget given arguments it cannot show (wrong type, unknown option) or missing its front-end files."""


class RemoteError(SaekitError, RuntimeError):
    """A remote (NDIF) run could not start or failed on the server; the message says why (never the key)."""


class CacheError(SaekitError, ValueError):
    """A cache folder that is missing, corrupt or does not hold what was asked for."""


class TrainingError(SaekitError, ValueError):
    """Training cannot start or continue (bad data, mismatched checkpoint); the message names the fix."""


class UnembedError(SaekitError, ValueError):
    """The model's read-out could not be found; the message says what to pass instead."""


class CircuitError(SaekitError, ValueError):
    """Bad input to circuit attribution (hook points, prompts, metric, thresholds); names the fix."""
class EvalError(SaekitError, ValueError):
    """Input an evaluation cannot use (one class of labels, no words, unknown evaluation); names the fix."""


class EndpointError(SaekitError, RuntimeError):
    """An LLM endpoint that cannot be reached or keeps failing; cached replies are kept (never the key)."""


class ExerciseError(SaekitError, AssertionError):
    """A course exercise (`saekit.course`) that does not pass its check: the message says what is wrong
    (shape, value at which element, a known mistake, a gradient that does not flow) without the answer."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback: the message alone (the frames are the checker's, not
        the student's); `%xmode` has no effect on it, and plain Python and pytest show the full traceback."""
        return [f"\x1b[0;31mExerciseError\x1b[0m: {self}"]
