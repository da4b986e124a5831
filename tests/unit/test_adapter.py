"""The article's adapter: keyword model -> positional tensors in, logits out."""

from __future__ import annotations

import pytest
import torch

from tritonfleet.adapter import ModelTorchTraceAdapter


@pytest.fixture(scope="module")
def model(tiny_model):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(tiny_model), attn_implementation="eager").eval()


def _inputs(batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch * 100 + length)
    ids = torch.randint(1000, 2000, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, length // 2:] = 0
    return ids, mask


def test_adapter_returns_the_models_logits(model):
    ids, mask = _inputs(2, 12)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
        got = ModelTorchTraceAdapter(model)(ids, mask)
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, want)


def test_adapter_puts_the_model_in_eval_mode(model):
    model.train()
    adapter = ModelTorchTraceAdapter(model)
    assert not adapter.model.training


@pytest.mark.parametrize(("batch", "length"), [(1, 7), (5, 33)])
def test_traced_adapter_matches_eager_at_other_shapes(model, batch, length):
    traced = torch.jit.trace(ModelTorchTraceAdapter(model), _inputs(1, 100), check_trace=False)
    ids, mask = _inputs(batch, length)
    with torch.no_grad():
        torch.testing.assert_close(traced(ids, mask), model(input_ids=ids, attention_mask=mask).logits,
                                   atol=1e-4, rtol=0)
