"""Postprocessing model (Triton python backend): logits -> LABEL (string) and SCORES (softmax).

The label names come from the converted model's config (id2label), passed in the `postprocess` parameter.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        p = json.loads(config["parameters"]["postprocess"]["string_value"])
        self.logits_name, self.label_name, self.scores_name = p["logits"], p["label"], p["scores"]
        label_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(config, self.label_name)["data_type"])
        self.labels = np.array([s.encode("utf-8") for s in p["labels"]], dtype=label_dtype)
        self.scores_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(config, self.scores_name)["data_type"])

    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, self.logits_name)
            if tensor is None:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(
                    f"input '{self.logits_name}' is missing", pb_utils.TritonError.INVALID_ARG)))
                continue
            logits = tensor.as_numpy().astype(np.float64)
            if logits.ndim != 2 or logits.shape[1] != len(self.labels):
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(
                    f"expected logits of shape [batch, {len(self.labels)}], got {list(logits.shape)}",
                    pb_utils.TritonError.INVALID_ARG)))
                continue
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            scores = (z / z.sum(axis=1, keepdims=True)).astype(self.scores_dtype)
            labels = self.labels[scores.argmax(axis=1)].reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(self.label_name, labels), pb_utils.Tensor(self.scores_name, scores)]))
        return responses
