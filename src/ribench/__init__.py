"""ribench: measure what adapting a pretrained model does to its robustness.

The Python API (docs/api.md): ``ribench.run(spec, out=...)`` runs a spec and returns a
``Run`` (``results()``, ``summary()``, ``model(...)``), ``ribench.open(out)`` opens an
existing run, ``ribench.evaluate_model(model, suite, reference=m0)`` evaluates any model
on a suite. They live in ``ribench.api``, imported on first use, so that importing a part
of the package (a worker process, the ``ribench`` command) does not import all of it.
"""

__version__ = "0.1.0"

_API = ("ModelEvaluation", "Run", "evaluate_model", "open", "run")
__all__ = ["ModelEvaluation", "Run", "__version__", "evaluate_model", "run"]  # not `open`: * would shadow the builtin


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
