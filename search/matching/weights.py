"""The weight model: per-query weights of the relevance signals from the query's features.

A multinomial-logit ("softmax") linear model: each signal gets a logit
``bias[s] + coef[s] · standardised(features)``, and the weights are the softmax of the logits,
so they are positive and sum to 1. It is fitted by ``fitting.py`` (coordinate ascent on
nDCG@10 over training queries) and shipped as JSON next to this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search.matching.features import MODEL_FEATURES

SHIPPED_MODEL = Path(__file__).with_name("weights.json")
LEARNED_SIGNALS = ("dense", "lexical", "title")


@dataclass
class WeightModel:
    signals: tuple[str, ...]
    features: tuple[str, ...]
    mean: np.ndarray  # [F] feature standardisation
    scale: np.ndarray  # [F]
    bias: np.ndarray  # [S]
    coef: np.ndarray  # [S, F]
    trained_on: dict[str, Any] = field(default_factory=dict)  # provenance: sets, queries, regularisation

    @classmethod
    def constant(cls, weights: dict[str, float]) -> WeightModel:
        """A model that gives every query the same weights (fixed linear fusion)."""
        signals = tuple(weights)
        f = len(MODEL_FEATURES)
        bias = np.log(np.maximum(np.array([weights[s] for s in signals], dtype=np.float64), 1e-3))
        return cls(signals, MODEL_FEATURES, np.zeros(f), np.ones(f), bias, np.zeros((len(signals), f)))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits ``[..., S]`` for raw feature vectors ``[..., F]``."""
        z = (x - self.mean) / self.scale
        logits: np.ndarray = self.bias + z @ self.coef.T
        return logits

    def weights_matrix(self, x: np.ndarray) -> np.ndarray:
        logits = self.logits(x)
        logits = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        weights: np.ndarray = e / e.sum(axis=-1, keepdims=True)
        return weights

    def weights(self, x: np.ndarray) -> dict[str, float]:
        row = self.weights_matrix(np.asarray(x, dtype=np.float64)[None, :])[0]
        return {s: float(w) for s, w in zip(self.signals, row)}

    def to_json(self) -> dict[str, Any]:
        return {
            "signals": list(self.signals),
            "features": list(self.features),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "bias": self.bias.tolist(),
            "coef": self.coef.tolist(),
            "trained_on": self.trained_on,
        }

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path = SHIPPED_MODEL) -> WeightModel:
        data = json.loads(Path(path).read_text())
        if tuple(data["features"]) != MODEL_FEATURES:
            raise ValueError(
                f"weight model {path} was fitted on features {data['features']}, this version "
                f"computes {list(MODEL_FEATURES)}: refit it with `dss fit-weights`"
            )
        return cls(
            signals=tuple(data["signals"]),
            features=tuple(data["features"]),
            mean=np.array(data["mean"], dtype=np.float64),
            scale=np.array(data["scale"], dtype=np.float64),
            bias=np.array(data["bias"], dtype=np.float64),
            coef=np.array(data["coef"], dtype=np.float64),
            trained_on=data.get("trained_on", {}),
        )
