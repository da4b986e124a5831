"""Classifier runner (Triton python backend): runs the ONNX or TorchScript export on hosts where the
native onnxruntime / pytorch backends are absent (e.g. the CPU tritonserver from the nvidia-pytriton wheel).

The requests Triton hands to one `execute` call are padded to a common length, run as ONE batch, and split
back: one response per request. Inputs are ragged-batched (allow_ragged_batch), so requests of different
lengths still share a batch.
"""

import json
import os
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        p = json.loads(config["parameters"]["runner"]["string_value"])
        self.ids_name, self.mask_name, self.logits_name = p["input_ids"], p["attention_mask"], p["logits"]
        self.pad_id = int(p["pad_token_id"])
        self.max_length = int(p["max_length"])
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
            return None, "inputs '%s' and '%s' are required" % (self.ids_name, self.mask_name)
        ids, mask = ids.as_numpy(), mask.as_numpy()
        if ids.ndim != 2 or ids.shape != mask.shape:
            return None, f"token ids {list(ids.shape)} and mask {list(mask.shape)} must both be [batch, length]"
        if ids.shape[1] > self.max_length:
            return None, f"sequence length {ids.shape[1]} exceeds the model's maximum {self.max_length}"
        return (ids, mask), None

    def execute(self, requests):
        responses = [None] * len(requests)
        good = []
        for r, request in enumerate(requests):
            pair, error = self._inputs(request)
            if error is not None:
                responses[r] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(error, pb_utils.TritonError.INVALID_ARG))
            else:
                good.append((r, *pair))
        if good:
            width = max(ids.shape[1] for _, ids, _ in good)
            rows = sum(ids.shape[0] for _, ids, _ in good)
            all_ids = np.full((rows, width), self.pad_id, dtype=self.ids_dtype)
            all_mask = np.zeros((rows, width), dtype=self.ids_dtype)
            row = 0
            for _, ids, mask in good:
                n, w = ids.shape
                all_ids[row:row + n, :w] = ids
                all_mask[row:row + n, :w] = mask
                row += n
            logits = self.run(all_ids, all_mask).astype(self.logits_dtype)
            row = 0
            for r, ids, _ in good:
                n = ids.shape[0]
                responses[r] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(self.logits_name, logits[row:row + n])])
                row += n
        return responses
