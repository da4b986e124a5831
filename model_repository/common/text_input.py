"""Raw-text input checks shared by the python models that take TEXT (the tokenizer, and the classifier runner with
native preprocessing): the same clear INVALID_ARG message for an empty, oversized or non-UTF-8 text either way.

Copied next to each such model's model.py by `tritonfleet build-repo`.
"""

import math


def request_texts(pb_utils, request, name, max_text_bytes):
    """The request's texts (str), or (None, an error message)."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None, f"input '{name}' is missing"
    items = tensor.as_numpy().reshape(-1)
    if items.size == 0:
        return None, f"input '{name}' has no texts; send at least one"
    # The shape must count the texts sent: Triton 2.51 lets a BYTES tensor through whose shape says 0 (or overflows
    # to 0) while it carries texts.
    declared = math.prod(int(d) for d in tensor.shape())
    if declared != items.size:
        return None, f"input '{name}' has shape {list(tensor.shape())} ({declared} texts) but carries {items.size}"
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
