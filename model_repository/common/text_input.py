"""Raw-text input checks shared by the python models that take TEXT (the tokenizer, and the classifier runner with
native preprocessing): the same clear INVALID_ARG message for an empty, oversized or non-UTF-8 text either way.

Copied next to each such model's model.py by `tritonfleet build-repo`.

Where a request's size is bounded: Triton 2.51 has no option that bounds a request's bytes (no
`--http-max-input-size`, which came in a later release; gRPC's largest message is hard-coded to 2 GiB - 1 byte),
and the python backend's stub deserializes a BYTES input into a numpy array of Python bytes while it loads the
request, before `execute()` runs (python_backend src/pb_tensor.cc; `as_numpy()` then only returns that array: 3 us
for 256 MiB, measured). So a model cannot spare the memory of an oversized request; the load balancer's
`load_balancer_max_request_size` does. What a model can do, and does here, is refuse on the declared shape before it
reads a text, and then on each text.
"""

import math


def max_texts(model_config, name):
    """The most texts one request may carry in input `name`, from the model config Triton hands `initialize`:
    max_batch_size rows (one when the model does not batch) times the product of the input's dims; None when a dim
    is variable (-1)."""
    dims = [int(d) for d in next(i["dims"] for i in model_config["input"] if i["name"] == name)]
    if any(d < 0 for d in dims):
        return None
    return max(1, int(model_config.get("max_batch_size", 0))) * math.prod(dims)


def request_texts(pb_utils, request, name, max_text_bytes, most_texts):
    """The request's texts (str), or (None, an error message). `most_texts`: `max_texts(...)` of the model."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None, f"input '{name}' is missing"
    # The declared shape first, before the texts are touched: Triton checks it against max_batch_size too, but a
    # model must not trust that to bound the loop below.
    shape = [int(d) for d in tensor.shape()]
    declared = math.prod(shape)
    if most_texts is not None and declared > most_texts:
        return None, (f"input '{name}' has shape {shape} ({declared} texts); this model takes at most {most_texts} "
                      "per request (max_batch_size)")
    items = tensor.as_numpy().reshape(-1)
    if items.size == 0:
        return None, f"input '{name}' has no texts; send at least one"
    # The shape must count the texts sent: Triton 2.51 lets a BYTES tensor through whose shape says 0 (or overflows
    # to 0) while it carries texts.
    if declared != items.size:
        return None, f"input '{name}' has shape {shape} ({declared} texts) but carries {items.size}"
    texts = []
    for i, item in enumerate(items):
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        if len(raw) > max_text_bytes:
            return None, f"{name}[{i}] is {len(raw)} bytes; the limit is {max_text_bytes} (parameter max_text_bytes)"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"{name}[{i}] is not valid UTF-8: {exc.reason} at byte {exc.start}"
        if not text.strip():
            return None, f"{name}[{i}] is empty; send at least one non-blank character"
        texts.append(text)
    return texts, None
