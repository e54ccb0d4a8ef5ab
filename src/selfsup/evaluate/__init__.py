"""Evaluation of frozen representations: the protocol shared by every method.

kNN (:mod:`.knn`), linear probe (:mod:`.linear`), few-shot (:mod:`.fewshot`), collapse
diagnostics (:mod:`.collapse`), and :func:`accuracy_metrics` that runs the label-based ones
with the protocol's settings (:mod:`.protocol`).
"""

from selfsup.evaluate.collapse import (
    CollapseThresholds,
    alignment,
    collapse_report,
    effective_rank,
    std_sqrt_d,
    uniformity,
)
from selfsup.evaluate.fewshot import fewshot_accuracy, fewshot_indices
from selfsup.evaluate.knn import knn_accuracy, knn_predict
from selfsup.evaluate.linear import (
    fit_logistic_regression,
    linear_probe_accuracy,
    predict_logistic_regression,
    standardisation_statistics,
)
from selfsup.evaluate.protocol import accuracy_metrics, raw_pixel_features

__all__ = [
    "CollapseThresholds",
    "accuracy_metrics",
    "alignment",
    "collapse_report",
    "effective_rank",
    "fewshot_accuracy",
    "fewshot_indices",
    "fit_logistic_regression",
    "knn_accuracy",
    "knn_predict",
    "linear_probe_accuracy",
    "predict_logistic_regression",
    "raw_pixel_features",
    "standardisation_statistics",
    "std_sqrt_d",
    "uniformity",
]
