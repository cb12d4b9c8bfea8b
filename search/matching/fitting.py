"""Fitting the weight model on judged queries, and cross-validating it.

Each training query's candidates (the union of every signal's top list) are scored once by
every signal; fitting then only re-weights those scores, so one evaluation of a parameter
setting over hundreds of queries is a few milliseconds of numpy.

The optimiser is coordinate ascent on mean nDCG@10 (Metzler & Croft's method for linear
ranking models): one parameter at a time moves to the best of a set of step sizes, sweeps
repeat until none improves, with an L2 penalty on the feature coefficients pulling toward the
constant model. The dense signal's logit is the reference (fixed at 0), since softmax weights
are unchanged by a shift common to all logits. Collections count equally, whatever their
number of queries.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.engine import SearchEngine
from search.evaluation import load_qrels, load_queries
from search.fusion import max_scaled
from search.matching.features import MODEL_FEATURES
from search.matching.weights import LEARNED_SIGNALS, WeightModel
from search.request import SearchRequest

CUTOFF = 10
STEPS = (-2.0, -1.0, -0.5, -0.25, -0.1, -0.05, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass
class TrainingSet:
    """Judged queries of one collection with their candidates' signal scores."""

    name: str
    query_ids: list[str]
    features: np.ndarray  # [Q, F] raw query features
    scores: np.ndarray  # [Q, M, S] min-max scaled signal scores, 0 where a signal missed
    valid: np.ndarray  # [Q, M] the candidate slot holds a document
    gains: np.ndarray  # [Q, M] relevance grade of each candidate
    ideal: np.ndarray  # [Q] ideal DCG@10 from all judged documents

    def subset(self, rows: np.ndarray) -> TrainingSet:
        return TrainingSet(
            self.name,
            [self.query_ids[i] for i in rows],
            self.features[rows],
            self.scores[rows],
            self.valid[rows],
            self.gains[rows],
            self.ideal[rows],
        )


def build_training_set(engine: SearchEngine, beir_dir: Path, batch_size: int = 64) -> TrainingSet:
    qrels = load_qrels(beir_dir)
    queries = {q: t for q, t in load_queries(beir_dir).items() if qrels.get(q)}
    ids = list(queries)
    rows = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        requests = [SearchRequest(queries[q], mode="dynamic") for q in chunk]
        found = engine.candidates(requests, engine.settings.candidates)
        keys = {key for c in found for s in c.signals.values() for key in s}
        docs = engine.store.get_by_keys(list(keys))
        for qid, c in zip(chunk, found):
            # Scaled as the engine's dynamic mode scales them (fusion.linear_fusion).
            scaled = {name: max_scaled(c.signals.get(name, {})) for name in LEARNED_SIGNALS}
            floors = {name: min(s.values(), default=0.0) for name, s in scaled.items()}
            candidates = sorted(set().union(*(s.keys() for s in scaled.values())))
            assert c.features is not None  # analysed: the requests are dynamic
            rows.append(
                (
                    c.features.vector(),
                    np.array([[scaled[s].get(key, floors[s]) for s in LEARNED_SIGNALS] for key in candidates]),
                    np.array([qrels[qid].get(docs[key].id, 0) if key in docs else 0 for key in candidates]),
                    _dcg(sorted(qrels[qid].values(), reverse=True)),
                )
            )
    width = max((len(g) for _, _, g, _ in rows), default=1)
    n, s = len(rows), len(LEARNED_SIGNALS)
    scores = np.zeros((n, width, s))
    valid = np.zeros((n, width), dtype=bool)
    gains = np.zeros((n, width))
    for i, (_, sc, g, _) in enumerate(rows):
        scores[i, : len(g)], valid[i, : len(g)], gains[i, : len(g)] = sc, True, g
    return TrainingSet(
        name=Path(beir_dir).name,
        query_ids=ids,
        features=np.array([f for f, _, _, _ in rows]).reshape(n, len(MODEL_FEATURES)),
        scores=scores,
        valid=valid,
        gains=gains,
        ideal=np.array([i for _, _, _, i in rows]),
    )


def _dcg(gains: Sequence[float]) -> float:
    g = np.asarray(list(gains)[:CUTOFF], dtype=np.float64)
    return float(np.sum(np.maximum(g, 0) / np.log2(np.arange(2, len(g) + 2))))


def ndcg(data: TrainingSet, weights: np.ndarray) -> np.ndarray:
    """nDCG@10 per query when query q's signals are weighted by ``weights[q]`` ([Q, S])."""
    fused = np.einsum("qms,qs->qm", data.scores, weights)
    fused = np.where(data.valid, fused, -np.inf)
    k = min(CUTOFF, fused.shape[1])
    part = np.argpartition(-fused, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(part, np.argsort(-np.take_along_axis(fused, part, 1), axis=1, kind="stable"), 1)
    top_gains = np.maximum(np.take_along_axis(data.gains, order, 1), 0)
    top_gains = np.where(np.take_along_axis(data.valid, order, 1), top_gains, 0)
    dcg = (top_gains / np.log2(np.arange(2, k + 2))).sum(axis=1)
    return np.where(data.ideal > 0, dcg / np.maximum(data.ideal, 1e-12), 0.0)


def model_ndcg(model: WeightModel, data: TrainingSet) -> float:
    order = [model.signals.index(s) for s in LEARNED_SIGNALS]
    return float(ndcg(data, model.weights_matrix(data.features)[:, order]).mean())


def best_constant(sets: Sequence[TrainingSet], step: float = 0.05) -> dict[str, float]:
    """The fixed weights (a grid over the simplex) with the best mean nDCG@10."""
    grid = np.arange(0, 1 + 1e-9, step)
    best: np.ndarray | None = None
    best_value = -1.0
    for combo in itertools.product(grid, repeat=len(LEARNED_SIGNALS) - 1):
        if sum(combo) > 1 + 1e-9:
            continue
        w = np.array([*combo, 1 - sum(combo)])
        value = float(np.mean([ndcg(d, np.tile(w, (len(d.ideal), 1))).mean() for d in sets]))
        if value > best_value:
            best, best_value = w, value
    assert best is not None  # any nDCG beats the starting -1 (no sets: nan, and nothing to fit)
    return dict(zip(LEARNED_SIGNALS, best.tolist()))


def fit(sets: Sequence[TrainingSet], l2: float = 0.02, max_sweeps: int = 30) -> WeightModel:
    features = np.concatenate([d.features for d in sets])
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-6] = 1.0  # a feature constant in training (no quotes, say) stays inert
    start = best_constant(sets)
    # Start at the best fixed weights (a left-out signal at weight 0.001, from where the
    # features can still raise it for the queries it helps).
    model = WeightModel.constant(start)
    model.mean, model.scale = mean, scale
    model.bias = model.bias - model.bias[0]  # the dense logit is the reference

    def objective(m: WeightModel) -> float:
        quality = float(np.mean([model_ndcg(m, d) for d in sets]))
        return quality - l2 * float(np.sum(m.coef**2))

    # Free parameters: every non-reference signal's bias and coefficients.
    params: list[tuple[str, int, int | None]] = [("bias", s, None) for s in range(1, len(model.signals))]
    params += [("coef", s, f) for s in range(1, len(model.signals)) for f in range(len(MODEL_FEATURES))]
    current = objective(model)
    for _ in range(max_sweeps):
        improved = False
        for kind, s, f in params:
            array = model.bias if kind == "bias" else model.coef
            index = s if kind == "bias" else (s, f)
            original = array[index]
            best_value, best_param = current, original
            for step in STEPS:
                array[index] = original + step
                value = objective(model)
                if value > best_value + 1e-7:
                    best_value, best_param = value, array[index]
            array[index] = best_param
            if best_param != original:
                current, improved = best_value, True
        if not improved:
            break
    model.trained_on = {
        "sets": [d.name for d in sets],
        "queries": int(sum(len(d.ideal) for d in sets)),
        "l2": l2,
        "method": "coordinate ascent on mean nDCG@10, softmax-linear weights",
        "start": start,
    }
    return model


def split_folds(data: TrainingSet, k: int, seed: int = 0) -> list[tuple[TrainingSet, TrainingSet]]:
    """k (train, test) splits of one collection's queries."""
    order = np.random.default_rng(seed).permutation(len(data.ideal))
    parts = np.array_split(order, k)
    return [
        (data.subset(np.concatenate([p for j, p in enumerate(parts) if j != i])), data.subset(part))
        for i, part in enumerate(parts)
    ]


def cross_validation_report(
    sets: Sequence[TrainingSet], folds: int = 5, l2: float = 0.02
) -> list[dict[str, float | str]]:
    """Held-out nDCG@10 of the dynamic model and of the best fixed weights, both fitted on
    the same training queries: each collection against each other one, then k folds within
    each collection (the folds' test queries pooled)."""
    rows: list[dict[str, float | str]] = []

    def score(train: Sequence[TrainingSet], test: TrainingSet) -> tuple[float, float]:
        fixed = WeightModel.constant(best_constant(train))
        return model_ndcg(fixed, test), model_ndcg(fit(train, l2=l2), test)

    for train in sets:
        for test in sets:
            if test is not train:
                fixed, dynamic = score([train], test)
                rows.append({"train": train.name, "test": test.name, "fixed": fixed, "dynamic": dynamic})
    for data in sets:
        totals = np.zeros(2)
        for train, test in split_folds(data, folds):
            totals += np.array(score([train], test)) * len(test.ideal)
        fixed, dynamic = totals / len(data.ideal)
        rows.append({"train": f"{data.name} ({folds} folds)", "test": data.name, "fixed": fixed, "dynamic": dynamic})
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()} for row in rows]
