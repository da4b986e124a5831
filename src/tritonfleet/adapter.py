"""The article's conversion adapter: positional tensors in, logits out, so torch.jit.trace can follow it."""

from __future__ import annotations

import torch


class ModelTorchTraceAdapter(torch.nn.Module):
    """Wraps a Hugging Face sequence classifier.

    The model takes keyword arguments and returns a ModelOutput; tracing (and ONNX export) wants positional
    tensors in and a tensor out. The adapter gives exactly that: (input_ids, attention_mask) -> logits.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        self.eval()  # the adapter too: exporters warn about (and may trace) a module in training mode

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
