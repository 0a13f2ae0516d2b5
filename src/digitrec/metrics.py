"""Classification metrics on numpy arrays: accuracy, confusion, per-class scores, calibration."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted."""
    return np.bincount(labels * classes + preds, minlength=classes * classes).reshape(classes, classes)


def per_class(confusion: np.ndarray) -> list[dict[str, float]]:
    tp = np.diag(confusion).astype(float)
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=(precision + recall) > 0)
    return [dict(precision=float(p), recall=float(r), f1=float(f), support=int(s))
            for p, r, f, s in zip(precision, recall, f1, support, strict=True)]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    z = logits / temperature
    z = z - z.max(1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, list[float]]:
    """Per-bin mean confidence, accuracy and count, for a reliability diagram."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    out: dict[str, list[float]] = dict(confidence=[], accuracy=[], count=[], lower=list(edges[:-1]))
    for b in range(bins):
        mask = idx == b
        out["confidence"].append(float(conf[mask].mean()) if mask.any() else float("nan"))
        out["accuracy"].append(float(correct[mask].mean()) if mask.any() else float("nan"))
        out["count"].append(int(mask.sum()))
    return out


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T minimising validation NLL, by golden-section search.

    When every validation image is right, the NLL keeps falling as T -> 0 and has no minimum: a bundled
    ensemble member with 1,000 of 1,000 right got T = 0.05, the search's bound, and a confidence of 1.0
    on nearly everything. Then T is set so that the mean confidence is (n + 1) / (n + 2), Laplace's
    rule-of-succession estimate of the accuracy, which does not claim certainty from a finite sample."""
    labels = np.asarray(labels)
    if len(labels) and bool((logits.argmax(1) == labels).all()):
        return temperature_for_confidence(logits, (len(labels) + 1) / (len(labels) + 2))
    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, labels, np.exp(a)), nll(logits, labels, np.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def temperature_for_confidence(logits: np.ndarray, confidence: float) -> float:
    """The T in [0.05, 20] whose mean top-class probability is `confidence` (it falls as T grows)."""
    lo, hi = np.log(0.05), np.log(20.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        if softmax(logits, float(np.exp(mid))).max(1).mean() > confidence:
            lo = mid
        else:
            hi = mid
    return float(np.exp((lo + hi) / 2))


def summarize(logits: np.ndarray, labels: np.ndarray, classes: int) -> dict:
    """The evaluation record used by `digitrec evaluate --json` and the report."""
    preds = logits.argmax(1)
    conf = confusion_matrix(labels, preds, classes)
    return dict(
        accuracy=float((preds == labels).mean()),
        loss=nll(logits, labels),
        n=int(len(labels)),
        per_class=per_class(conf),
        confusion=conf.tolist(),
    )
