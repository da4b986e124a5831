"""Tokenizer model (Triton python backend).

TEXT (TYPE_STRING, [batch, 1]) -> INPUT__0 token ids, INPUT__1 attention mask (dtypes from the config).

All texts of all the requests Triton hands to one `execute` call are tokenized in one batched call.
Each request's output is padded to the smallest configured length bucket that holds its longest text,
so requests of similar length share a shape and the classifier's dynamic batcher can merge them.
A bad text (empty, too large, not UTF-8), or a request carrying more texts than max_batch_size, fails only its
own request, with INVALID_ARG. So does a text the tokenizer itself raises on (e.g. a WordPiece vocabulary without
its unknown token meets a character outside it): the batched call is then repeated one request at a time, so the
requests batched with it still get their tokens.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_input import max_texts, request_texts  # noqa: E402 - copied beside this file by build-repo


def _params(model_config):
    return {k: v["string_value"] for k, v in model_config.get("parameters", {}).items()}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = _params(config)
        p = json.loads(params["tokenizer"])
        self.text_name = p["text"]
        self.ids_name = p["input_ids"]
        self.mask_name = p["attention_mask"]
        self.max_length = int(p["max_length"])
        self.pad_id = int(p["pad_token_id"])
        self.max_text_bytes = int(p["max_text_bytes"])
        self.max_texts = max_texts(config, self.text_name)
        self.buckets = sorted(int(b) for b in p["length_buckets"] if int(b) <= self.max_length)
        self.ids_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(config, self.ids_name)["data_type"])
        self.mask_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(config, self.mask_name)["data_type"])
        path = Path(args["model_repository"]) / args["model_version"] / p["tokenizer_file"]
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()

    def _bucket(self, length):
        for b in self.buckets:
            if length <= b:
                return b
        return max(length, 1)

    def _encode(self, texts):
        """{request index: the encodings of its texts, or the message of the tokenizer's error on them}.

        Every text in one batched call. If the tokenizer raises, the call is repeated for each request's texts on
        their own: a text it cannot encode then fails only the request that sent it, not the whole batch."""
        flat = [t for items in texts.values() for t in items]
        try:
            encodings = self.tokenizer.encode_batch(flat) if flat else []
        except Exception:  # noqa: BLE001 - find the request(s) it raises on, below
            out = {}
            for r, items in texts.items():
                try:
                    out[r] = self.tokenizer.encode_batch(items)
                except Exception as exc:  # noqa: BLE001 - this request's own texts: its error alone
                    out[r] = f"the tokenizer cannot encode this request's {self.text_name}: {exc}"
            return out
        out, start = {}, 0
        for r, items in texts.items():
            out[r] = encodings[start:start + len(items)]
            start += len(items)
        return out

    def execute(self, requests):
        responses = [None] * len(requests)
        texts = {}  # request index -> its texts
        for r, request in enumerate(requests):
            items, error = request_texts(pb_utils, request, self.text_name, self.max_text_bytes, self.max_texts)
            if error is not None:
                responses[r] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(error, pb_utils.TritonError.INVALID_ARG))
                continue
            texts[r] = items

        for r, enc in self._encode(texts).items():
            if isinstance(enc, str):
                responses[r] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(enc, pb_utils.TritonError.INVALID_ARG))
                continue
            count = len(enc)
            width = self._bucket(max(len(e.ids) for e in enc))
            ids = np.full((count, width), self.pad_id, dtype=self.ids_dtype)
            mask = np.zeros((count, width), dtype=self.mask_dtype)
            for row, e in enumerate(enc):
                ids[row, :len(e.ids)] = e.ids
                mask[row, :len(e.ids)] = 1
            responses[r] = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(self.ids_name, ids), pb_utils.Tensor(self.mask_name, mask)])
        return responses
