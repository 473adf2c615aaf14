"""The linear-probe head: standardised features, L2-regularised logistic regression, as one Dense layer.

CLIP and DINOv2 evaluate frozen features this way (scikit-learn's L-BFGS). The fitted scaler
(mean mu, deviation sigma) and regression (W, b) fold into a single softmax Dense layer,
``softmax(x @ (W / sigma) + (b - (mu / sigma) @ W))``, built by :func:`build_head` like every
other head: the classifier stays one plain Keras model that export and Grad-CAM understand.
"""

from __future__ import annotations

import warnings

import numpy as np

from transferlab._keras import keras
from transferlab.training.head import build_head

# A class missing from the training rows gets this logit bias: probability ~0, never predicted.
_ABSENT_BIAS = -30.0


def fit_logistic_head(features: np.ndarray, labels: np.ndarray, num_classes: int, *, c: float,
                      class_weight: str | None = None, max_iter: int = 1000) -> keras.Model:
    """Fit the linear probe on features and return it as a Keras head.

    Args:
        features: (N, D) float32 training features.
        labels: (N,) int class indices in ``[0, num_classes)``.
        num_classes: C, the head's output width.
        c: inverse L2 regularisation strength of scikit-learn's ``LogisticRegression``.
        class_weight: ``"balanced"``; anything else (None, "none", "auto") fits unweighted.
        max_iter: L-BFGS iteration limit.

    Returns:
        ``build_head(D, C, dropout=0)``: features (N, D) -> probabilities (N, C), weights set to
        the fitted probe with the standardisation folded in.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    features = np.asarray(features, np.float64)
    labels = np.asarray(labels, np.int64)
    scaler = StandardScaler().fit(features)
    # TrainConfig's "none" means unweighted; "auto" is resolved on validation for the Keras head only,
    # the probe then fits unweighted.
    model = LogisticRegression(C=c, max_iter=max_iter, class_weight="balanced" if class_weight == "balanced" else None)
    # One BLAS thread: for a matrix this small, more threads cost more than they give (a lot more
    # on a busy CPU; see transferlab.selection.heads).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(scaler.transform(features), labels)
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # scikit-learn keeps one row for two classes: logits (-z/2, z/2) give the same softmax
        coef, intercept = np.stack([-coef[0], coef[0]]) / 2, np.array([-intercept[0], intercept[0]]) / 2
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    kernel = np.zeros((features.shape[1], num_classes))
    bias = np.full(num_classes, _ABSENT_BIAS)
    kernel[:, model.classes_] = (coef / scale).T
    bias[model.classes_] = intercept - (scaler.mean_ / scale) @ coef.T
    head = build_head(features.shape[1], num_classes, hidden_units=0, dropout=0.0)
    head.get_layer("predictions").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return head
