"""A hard subset chosen by simple classifiers, as ImageNet-A is chosen by ResNet-50's errors.

ImageNet-A (Hendrycks et al., 2021) keeps natural images of its classes that a ResNet-50
misclassifies. Here three simple classifiers from scikit-learn, fitted on the pretraining
domain's train split (raw pixels on the 0..1 scale, flattened), score a pool of
candidate images; the hardest candidates of each class form the subset.

Hardness of a candidate: first the number of classifiers that misclassify it (0..3),
then, among equals, the lower probability logistic regression gives its true class.
Each source image contributes at most its hardest candidate, so a subset never holds
two variants of one digit. Fitting uses one BLAS thread (``threadpoolctl``), so the
choice does not depend on the machine's thread count.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ....core.errors import DataError
from ....core.types import Split

#: ``KNeighborsClassifier(n_neighbors=KNN_K)``
KNN_K = 5
#: ``LogisticRegression(max_iter=LOGREG_MAX_ITER)`` (lbfgs, C = 1)
LOGREG_MAX_ITER = 300


def _features(images: torch.Tensor) -> np.ndarray:
    """uint8 ``[N, C, H, W]`` -> float64 ``[N, C * H * W]`` on the 0..1 scale."""
    return images.reshape(len(images), -1).numpy().astype(np.float64) / 255


@dataclass
class SimpleClassifiers:
    """Nearest centroid, logistic regression and k-nearest neighbours on raw pixels.

    ``fit(split)`` returns self; ``predictions(images)`` is int64 ``[3, N]`` (one row per
    classifier, in that order); ``true_class_probability(images, labels)`` is logistic
    regression's probability of ``labels``, float64 ``[N]``.
    """

    seed: int = 0

    def fit(self, split: Split) -> "SimpleClassifiers":
        from sklearn.linear_model import LogisticRegression
        from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
        from threadpoolctl import threadpool_limits

        if len(torch.unique(split.labels)) < 2:
            raise DataError(f"simple classifiers need at least 2 classes in their train split, got {len(split)} images "
                            f"of classes {torch.unique(split.labels).tolist()}")
        x, y = _features(split.images), split.labels.numpy()
        with threadpool_limits(1), warnings.catch_warnings():
            # MNIST's always-black corner pixels have zero spread within a class: expected here
            warnings.filterwarnings("ignore", "self.within_class_std_dev_", UserWarning)
            self.models_ = (
                NearestCentroid().fit(x, y),
                LogisticRegression(max_iter=LOGREG_MAX_ITER, random_state=self.seed).fit(x, y),
                KNeighborsClassifier(n_neighbors=KNN_K).fit(x, y),
            )
        return self

    def predictions(self, images: torch.Tensor) -> torch.Tensor:
        from threadpoolctl import threadpool_limits

        x = _features(images)
        with threadpool_limits(1):
            return torch.from_numpy(np.stack([m.predict(x) for m in self.models_]).astype(np.int64))

    def true_class_probability(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from threadpoolctl import threadpool_limits

        logreg = self.models_[1]
        with threadpool_limits(1):
            proba = logreg.predict_proba(_features(images))
        column = np.searchsorted(logreg.classes_, labels.numpy())
        return torch.from_numpy(proba[np.arange(len(labels)), column])


def hardness(classifiers: SimpleClassifiers, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """float64 ``[N]``, higher = harder: classifiers wrong (0..3) + (1 - p_true) / 2, where
    p_true is logistic regression's probability of the true class (so the count decides
    and the probability breaks ties)."""
    wrong = (classifiers.predictions(images) != labels.unsqueeze(0)).sum(dim=0).double()
    return wrong + (1 - classifiers.true_class_probability(images, labels)) / 2


def select_hard(labels: torch.Tensor, source: torch.Tensor, score: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices of the ``per_class`` hardest candidates of each class, at most one per
    source image, sorted by index.

    ``labels`` int64 ``[N]``: the candidates' classes; ``source`` int64 ``[N]``: which
    source image each candidate was made from;
    ``score`` float ``[N]``: hardness (higher = harder; ties go to the lower index).
    A class with fewer distinct sources than ``per_class`` raises ``DataError``."""
    n = len(labels)
    if len(source) != n or len(score) != n:
        raise DataError(f"select_hard: {n} candidates but {len(source)} sources and {len(score)} scores")
    order = torch.from_numpy(np.lexsort((np.arange(n), -score.numpy())))  # hardest first, then by index
    # a stable sort by source keeps hardness order within a source: its first is its hardest
    sorted_src, perm = torch.sort(source[order], stable=True)
    first_sorted = torch.ones(n, dtype=torch.bool)
    first_sorted[1:] = sorted_src[1:] != sorted_src[:-1]
    first = torch.empty(n, dtype=torch.bool)
    first[perm] = first_sorted
    chosen = [torch.zeros(0, dtype=torch.int64)]
    for c in torch.unique(labels).tolist():
        ranked = order[first & (labels[order] == c)]
        if len(ranked) < per_class:
            raise DataError(f"select_hard: class {c} has {len(ranked)} distinct source images among the candidates, "
                            f"fewer than the {per_class} asked for")
        chosen.append(ranked[:per_class])
    return torch.sort(torch.cat(chosen)).values
