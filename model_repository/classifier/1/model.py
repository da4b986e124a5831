"""Classifier runner (Triton python backend): runs the ONNX or TorchScript export on hosts where the
native onnxruntime / pytorch backends are absent (e.g. the CPU tritonserver from the nvidia-pytriton wheel).

Inputs are ragged-batched (allow_ragged_batch), so requests of different lengths share one `execute` call.
All the rows of the requests in a call are trimmed to their real length (the trailing positions whose
attention mask is 0 are dropped), sorted by that length and run in chunks of `sub_batch_size` rows (0: all in
one run), each chunk padded only to its own longest row. Sorting keeps the padding small: on a CPU, running
short texts padded to a long one costs more than batching gains. The int8 model is served with sub_batch_size 1
(build-repo sees to it): its activations are quantized per run, so each text must run alone to get the same
scores whatever it is batched with.

With native preprocessing (`native` in the runner parameters) the model file is the onnxruntime-extensions
tokenizer graph merged in front of the export: the runner takes TEXT, checks each text as the tokenizer model
does (text_input.py: the same INVALID_ARG messages), sorts the texts by byte length (a proxy of their token
count) and runs `sub_batch_size` of them per run (1 when the tokenizer op cannot batch); the graph tokenizes in C++.

One response per request, in order. A request with bad tensors (shape, length, token ids outside the vocabulary)
or texts (text_input.py) gets its own INVALID_ARG and never reaches the model, so it cannot fail the requests batched
with it. If a run fails anyway, and its rows come from several requests, each of those requests' rows is run again on
its own (`_run_chunk`): only the request(s) whose own rows fail get the error (INTERNAL), the others their logits.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        p = json.loads(config["parameters"]["runner"]["string_value"])
        self.ids_name, self.mask_name, self.logits_name = p["input_ids"], p["attention_mask"], p["logits"]
        self.native = bool(p.get("native"))
        if self.native:
            self._initialize_native(args, config, p)
            return
        self.pad_id = int(p["pad_token_id"])
        self.max_length = int(p["max_length"])
        self.vocab_size = int(p.get("vocab_size", 0))  # 0: unknown (artifacts of an older convert)
        self.sub_batch_size = int(p.get("sub_batch_size", 0))
        self.mask_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_input_config_by_name(config, self.mask_name)["data_type"])
        self.num_labels = int(pb_utils.get_output_config_by_name(config, self.logits_name)["dims"][-1])
        self.ids_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_input_config_by_name(config, self.ids_name)["data_type"])
        self.logits_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(config, self.logits_name)["data_type"])
        path = Path(args["model_repository"]) / args["model_version"] / p["model_file"]
        threads = int(p.get("threads", 0)) or None
        gpu = args.get("model_instance_kind") == "GPU"
        if p["format"] == "torchscript":
            import torch

            if threads:
                torch.set_num_threads(threads)
            self.device = f"cuda:{args['model_instance_device_id']}" if gpu else "cpu"
            self.dtype = torch.float16 if (gpu and p.get("fp16")) else torch.float32
            self.module = torch.jit.load(str(path), map_location=self.device).eval()
            if self.dtype == torch.float16:
                self.module = self.module.half()
            self._torch = torch
            self.run = self._run_torch
        else:
            import onnxruntime as ort

            so = ort.SessionOptions()
            if threads:
                so.intra_op_num_threads = threads
                so.inter_op_num_threads = 1
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
            self.session = ort.InferenceSession(str(path), so, providers=providers)
            self.run = self._run_onnx
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def _initialize_native(self, args, config, p):
        import onnxruntime as ort
        from onnxruntime_extensions import get_library_path

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from text_input import max_texts, request_texts  # copied beside this file by build-repo

        self.request_texts = request_texts
        self.text_name, self.max_text_bytes = p["text"], int(p["max_text_bytes"])
        self.max_texts = max_texts(config, self.text_name)
        self.num_labels = int(pb_utils.get_output_config_by_name(config, self.logits_name)["dims"][-1])
        self.logits_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(config, self.logits_name)["data_type"])
        self.sub_batch_size = int(p.get("sub_batch_size", 0)) if p.get("batchable", True) else 1
        so = ort.SessionOptions()
        so.register_custom_ops_library(get_library_path())
        threads = int(p.get("threads", 0))
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        path = Path(args["model_repository"]) / args["model_version"] / p["model_file"]
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        if p.get("warmup", True):
            self._run_texts(["warm up"])
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def _run_texts(self, texts):
        return self.session.run([self.logits_name], {self.text_name: np.array([[t] for t in texts], dtype=object)})[0]

    def _execute_native(self, requests):
        responses = [None] * len(requests)
        texts = {}  # request index -> its texts
        rows = []  # (bytes, request index, row of the request)
        for r, request in enumerate(requests):
            items, error = self.request_texts(pb_utils, request, self.text_name, self.max_text_bytes, self.max_texts)
            if error is not None:
                responses[r] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(error, pb_utils.TritonError.INVALID_ARG))
                continue
            texts[r] = items
            rows.extend((len(t.encode("utf-8")), r, i) for i, t in enumerate(items))
        logits = {r: np.zeros((len(items), self.num_labels), dtype=self.logits_dtype) for r, items in texts.items()}
        rows.sort()
        step = self.sub_batch_size or max(1, len(rows))
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            self._run_chunk(chunk, lambda rows: self._run_texts([texts[r][i] for _, r, i in rows]),
                            lambda rows, exc: f"the model failed on {len(rows)} text(s): {exc}", logits, responses)
        for r, values in logits.items():
            responses[r] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.logits_name, values)])
        return responses

    @staticmethod
    def _run_chunk(chunk, run, describe, logits, responses):
        """Run one chunk of rows, (sort key, request index, row of the request), into `logits` {request: array}.

        `run(rows)` returns one row of logits per row; `describe(rows, exc)` words a failure. A request already
        failed (not in `logits`) is skipped. If the run raises and its rows come from several requests, each
        request's rows are run again on their own: a text or a row the model cannot take then fails only the
        request that sent it, and the others batched with it still get their logits."""
        chunk = [row for row in chunk if row[1] in logits]
        if not chunk:
            return
        try:
            out = run(chunk)
        except Exception as exc:  # noqa: BLE001 - fail the requests of this run, not the whole batch
            owners = list(dict.fromkeys(r for _, r, _ in chunk))
            if len(owners) > 1:
                for owner in owners:
                    TritonPythonModel._run_chunk([row for row in chunk if row[1] == owner], run, describe, logits,
                                                 responses)
                return
            del logits[owners[0]]
            responses[owners[0]] = pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(describe(chunk, exc), pb_utils.TritonError.INTERNAL))
            return
        for k, (_, r, i) in enumerate(chunk):
            logits[r][i] = out[k]

    def _run_onnx(self, ids, mask):
        return self.session.run([self.logits_name], {self.ids_name: ids, self.mask_name: mask})[0]

    def _run_torch(self, ids, mask):
        torch = self._torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))
        return out.float().cpu().numpy()

    def _inputs(self, request):
        ids = pb_utils.get_input_tensor_by_name(request, self.ids_name)
        mask = pb_utils.get_input_tensor_by_name(request, self.mask_name)
        if ids is None or mask is None:
            return None, f"inputs '{self.ids_name}' and '{self.mask_name}' are required"
        ids, mask = ids.as_numpy(), mask.as_numpy()
        if ids.ndim != 2 or ids.shape != mask.shape:
            return None, f"token ids {list(ids.shape)} and mask {list(mask.shape)} must both be [batch, length]"
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            return None, f"token ids of shape {list(ids.shape)}: send at least one row of at least one token"
        if ids.shape[1] > self.max_length:
            return None, f"sequence length {ids.shape[1]} exceeds the model's maximum {self.max_length}"
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or (self.vocab_size and high >= self.vocab_size):
            return None, (f"token ids must lie in 0..{self.vocab_size - 1 if self.vocab_size else 'vocab size'}; "
                          f"got {low}..{high}")
        return (ids, mask), None

    @staticmethod
    def _lengths(mask):
        """Real length of each row: one past its last position with a non-zero mask (at least 1)."""
        nonzero = mask != 0
        last = mask.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
        return np.where(nonzero.any(axis=1), last, 1)

    def execute(self, requests):
        if self.native:
            return self._execute_native(requests)
        responses = [None] * len(requests)
        inputs = {}  # request index -> (ids, mask)
        rows = []  # (real length, request index, row of the request)
        for r, request in enumerate(requests):
            pair, error = self._inputs(request)
            if error is not None:
                responses[r] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(error, pb_utils.TritonError.INVALID_ARG))
                continue
            inputs[r] = pair
            rows.extend((int(n), r, i) for i, n in enumerate(self._lengths(pair[1])))
        logits = {r: np.zeros((ids.shape[0], self.num_labels), dtype=self.logits_dtype)
                  for r, (ids, _) in inputs.items()}
        rows.sort()
        step = self.sub_batch_size or max(1, len(rows))

        def padded(chunk):  # the chunk's rows, padded to its longest (the chunk is sorted by length)
            width = chunk[-1][0]
            ids = np.full((len(chunk), width), self.pad_id, dtype=self.ids_dtype)
            mask = np.zeros((len(chunk), width), dtype=self.mask_dtype)
            for k, (n, r, i) in enumerate(chunk):
                ids[k, :n] = inputs[r][0][i, :n]
                mask[k, :n] = inputs[r][1][i, :n]
            return ids, mask

        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            self._run_chunk(chunk, lambda rows: self.run(*padded(rows)),
                            lambda rows, exc: f"the model failed on input of shape {[len(rows), rows[-1][0]]}: {exc}",
                            logits, responses)
        for r, values in logits.items():
            responses[r] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.logits_name, values)])
        return responses
