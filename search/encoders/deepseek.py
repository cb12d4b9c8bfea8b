"""DeepSeek decoder checkpoints (deepseek-llm, R1-Distill, V2/V3) used as embedding models.

The checkpoint is loaded from a local directory through transformers' Auto classes, so any
architecture transformers knows (llama, qwen2, deepseek_v2, deepseek_v3) works. Token states
become one vector by last-token pooling (default) or mean pooling over real tokens.

Padding: we pad on the right and gather each row's last *real* token via the attention mask.
With right padding a causal model's real tokens never attend to padding and keep their
natural position ids, so a text's vector does not depend on what it was batched with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from search.config import EncoderSettings
from search.encoders.base import Encoder, Fingerprint, resolve_device

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_SEQ_LENGTH = 512


class DeepSeekEncoder(Encoder):
    def __init__(self, settings: EncoderSettings) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(settings.model).expanduser()
        if not path.is_dir():
            raise ValueError(f"encoder.model must be a local DeepSeek checkpoint directory, got {settings.model!r}")
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = AutoModel.from_pretrained(path, local_files_only=True, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.max_length = settings.max_seq_length or DEFAULT_MAX_SEQ_LENGTH
        dimension = int(self.model.config.hidden_size)
        self.fingerprint = Fingerprint("deepseek", path.name, dimension, settings.pooling)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        prefix = self.settings.query_instruction
        return self._encode([prefix + t for t in texts])

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # Longest first, so each batch pads to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batch_size = self.settings.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).last_hidden_state
                pooled = self._pool(hidden, batch["attention_mask"])
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                out[rows] = pooled.cpu().numpy()
        return out

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        import torch

        if self.settings.pooling == "mean":
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        last = mask.sum(dim=1) - 1  # index of the last real token (right padding)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
