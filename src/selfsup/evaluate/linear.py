"""Linear probe: multinomial logistic regression on frozen features.

The standard linear evaluation of self-supervised representations (Zhang, Isola & Efros,
"Colorful Image Colorization", ECCV 2016; Kolesnikov, Zhai & Beyer, "Revisiting
Self-Supervised Visual Representation Learning", CVPR 2019; the L-BFGS logistic-regression
probe of Chen et al., "Generative Pretraining from Pixels" (iGPT), ICML 2020 and of Radford
et al., "CLIP", ICML 2021). The encoder is frozen; one softmax layer is fit on its features
and the top-1 accuracy on the test split is reported.

The fit here is deterministic and has no learning rate to tune:

* features are standardised with the training mean and standard deviation (so one L2
  strength fits features of any scale), and the standardisation is folded back into the
  returned ``weight`` and ``bias``, which therefore apply to the *raw* features;
* the objective is the mean cross-entropy plus ``l2 / 2 * ||W||^2`` (the bias is not
  penalised), minimised full-batch with L-BFGS and a strong-Wolfe line search from zero,
  in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.evaluate._validation import check_same_dim, check_split

__all__ = [
    "DEFAULT_L2",
    "DEFAULT_MAX_ITER",
    "fit_logistic_regression",
    "predict_logistic_regression",
    "linear_probe_accuracy",
]

DEFAULT_L2 = 1e-4
DEFAULT_MAX_ITER = 500


def _standardise(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(standardised, mean, std)``; constant features get ``std = 1`` (they stay 0)."""
    mean = features.mean(dim=0)
    std = features.std(dim=0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (features - mean) / std, mean, std


def fit_logistic_regression(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    l2: float = DEFAULT_L2,
    max_iter: int = DEFAULT_MAX_ITER,
) -> tuple[Tensor, Tensor]:
    """Fit multinomial logistic regression to frozen features with full-batch L-BFGS.

    Minimises, over ``W [C, D]`` and ``b [C]`` on standardised features ``x~``::

        1/N sum_n CE(softmax(W x~_n + b), y_n) + l2 / 2 * ||W||_F^2

    (the bias is not penalised), then folds the standardisation into the result, so that
    ``features @ weight.T + bias`` are the logits for raw features.

    Args:
        features: ``[N, D]`` training features (any real dtype; fitted in float32, or in
            float64 if given float64).
        labels: ``[N]`` integer labels in ``[0, num_classes)``.
        num_classes: number of classes ``C``.
        l2: strength of the L2 penalty on the weights of the standardised features.
            The default ``1e-4`` is chosen so that raw Fashion-MNIST pixels reach the
            reference test top-1 of scikit-learn's ``LogisticRegression()`` (about 84.4%).
        max_iter: maximum number of L-BFGS iterations.

    Returns:
        ``(weight [C, D], bias [C])`` in the features' input space.
    """
    check_split("training", features, labels, num_classes)
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")

    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        standardised, mean, std = _standardise(features.detach().to(dtype))
    labels = labels.to(torch.int64)
    weight = torch.zeros(num_classes, features.shape[1], dtype=dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=False)
        loss = F.cross_entropy(torch.addmm(bias, standardised, weight.T), labels)
        loss = loss + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)

    with torch.no_grad():
        raw_weight = weight / std
        raw_bias = bias - raw_weight @ mean
    return raw_weight.detach(), raw_bias.detach()


@torch.no_grad()
def predict_logistic_regression(weight: Tensor, bias: Tensor, features: Tensor) -> Tensor:
    """Class predictions ``argmax(features @ weight.T + bias)`` as ``[M]`` int64."""
    logits = torch.addmm(bias, features.to(weight.dtype), weight.T)
    return logits.argmax(dim=1)


def linear_probe_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    **kw,
) -> float:
    """Test top-1 (fraction in ``[0, 1]``) of :func:`fit_logistic_regression` fit on train.

    Keyword arguments (``l2``, ``max_iter``) are passed to :func:`fit_logistic_regression`.
    """
    check_split("train", train_x, train_y, num_classes)
    check_split("test", test_x, test_y, num_classes)
    check_same_dim(train_x, test_x)
    weight, bias = fit_logistic_regression(train_x, train_y, num_classes, **kw)
    predictions = predict_logistic_regression(weight, bias, test_x)
    return float((predictions == test_y.to(torch.int64)).double().mean())
