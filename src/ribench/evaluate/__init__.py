"""Evaluation: one pass over many eval sets, metrics, protocol summaries."""

from .metrics import ClassificationMetrics, accuracy, ece, mask_logits, nll
from .runner import evaluate, evaluate_many
from .summary import summarize

__all__ = ["ClassificationMetrics", "accuracy", "ece", "evaluate", "evaluate_many", "mask_logits", "nll", "summarize"]
