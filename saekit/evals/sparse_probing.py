"""Sparse probing (Gurnee et al. 2023; SAEBench): can k SAE latents classify a property of a text as well
as a linear probe on the full activations at the same hook point?

Each text is mean-pooled over its tokens. For each binary task (one class against the rest), the top-k
latents by absolute difference of class means on the training split are selected, a logistic regression
is fitted on them, and its test accuracy (balanced) is reported per k, next to the full-activation probe.
Built-in tasks: 'language' (Wikipedia leads en/es/fr) and 'code' (Python source vs English prose).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch

from ..data import source_documents
from ..errors import EvalError
from .activations import pooled

KS = (1, 2, 5, 20)
TASKS = ("language", "code")


def builtin_task(name: str, n_per_class: int = 60, seed: int = 0) -> tuple[list[str], list[str]]:
    """(texts, labels) of a built-in task from the held-out split."""
    rng = random.Random(seed)
    groups = {"language": {"en": "wiki_en", "es": "wiki_es", "fr": "wiki_fr"},
              "code": {"python": "python", "prose": "wiki_en"}}
    if name not in groups:
        raise EvalError(f"unknown sparse-probing task {name!r}; built-in tasks: {', '.join(TASKS)} "
                        "(or pass texts= and labels=)")
    texts, labels = [], []
    for label, src in groups[name].items():
        docs = [d.text for d in source_documents(src, "test") if d.text.strip()]
        rng.shuffle(docs)
        texts += docs[:n_per_class]
        labels += [label] * len(docs[:n_per_class])
    return texts, labels


def _split(y: Sequence[str], test_frac: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified train/test indices."""
    rng = random.Random(seed)
    train, test = [], []
    for c in sorted(set(y)):
        idx = [i for i, v in enumerate(y) if v == c]
        rng.shuffle(idx)
        n_test = max(1, round(test_frac * len(idx)))
        test += idx[:n_test]
        train += idx[n_test:]
    return train, test


def _fit_score(X_tr, y_tr, X_te, y_te) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(X_tr)
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(sc.transform(X_tr), y_tr)
    return float(balanced_accuracy_score(y_te, clf.predict(sc.transform(X_te))))


@dataclass
class ProbeData:
    acts: torch.Tensor
    """[N, D] mean-pooled activations."""
    latents: torch.Tensor
    """[N, F] mean-pooled SAE latents."""
    labels: list[str]


def sparse_probing(model, sae, tasks: Sequence[str] = TASKS, *, texts: Sequence[str] | None = None,
                   labels: Sequence[str] | None = None, ks: Sequence[int] = KS, n_per_class: int = 60,
                   max_tokens: int = 64, test_frac: float = 0.3, seed: int = 0):
    """A DataFrame with one row per (task, class): balanced test accuracy of the full-activation probe,
    of the top-k latent probes for each k, and the top latents. With `texts` and `labels` the users' task
    ('user') is probed instead of the built-in ones."""
    import pandas as pd

    if texts is not None or labels is not None:
        if texts is None or labels is None or len(texts) != len(labels):
            raise EvalError("pass texts= and labels= together, one label per text")
        if len(set(labels)) < 2:
            raise EvalError(f"the labels have one class ({sorted(set(labels))}): a probe needs at least two "
                            "classes; add texts of another class")
        task_data = {"user": (list(texts), [str(l) for l in labels])}
    else:
        task_data = {t: builtin_task(t, n_per_class, seed) for t in tasks}
    for name, (_, y) in task_data.items():
        small = {c: y.count(c) for c in set(y) if y.count(c) < 4}
        if small:
            raise EvalError(f"task {name!r}: classes {small} have fewer than 4 texts; give each class at least 4")
    rows = []
    for name, (X_text, y) in task_data.items():
        acts, lats = pooled(model, sae, X_text, max_tokens=max_tokens)
        train, test = _split(y, test_frac, seed)
        classes = sorted(set(y))
        for c in (classes if len(classes) > 2 else classes[:1]):
            yb = torch.tensor([v == c for v in y])
            row = {"task": name, "class": c if len(classes) > 2 else f"{c} vs {classes[1]}",
                   "n_train": len(train), "n_test": len(test)}
            row["full"] = _fit_score(acts[train].numpy(), yb[train].numpy(), acts[test].numpy(), yb[test].numpy())
            tr = torch.tensor(train)
            diff = (lats[tr][yb[tr]].mean(0) - lats[tr][~yb[tr]].mean(0)).abs()
            order = diff.argsort(descending=True)
            for k in ks:
                idx = order[:k]
                row[f"k={k}"] = _fit_score(lats[train][:, idx].numpy(), yb[train].numpy(),
                                           lats[test][:, idx].numpy(), yb[test].numpy())
            row["top_latents"] = order[:5].tolist()
            rows.append(row)
    return pd.DataFrame(rows)
