"""Setup A, the article's foil: the single-process Flask server a tutorial writes.

Flask's development server with `threaded=True` (one thread per connection, one Python process), PyTorch eager
(the Hugging Face model as loaded), tokenizing each request on its own. Nothing is tuned: that is the point.
Run: `python -m tritonfleet.bench.flask_app --model DIR --port PORT`.
"""

from __future__ import annotations

import argparse
import logging
import sys


def create_app(model_dir: str):  # -> flask.Flask
    import torch
    from flask import Flask, jsonify, request
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    labels = model.config.id2label
    app = Flask("tritonfleet-bench-flask")

    @app.get("/health")
    def health():
        return "ok"

    @app.post("/predict")
    def predict():
        text = request.get_json(force=True)["text"]
        inputs = tokenizer(text, return_tensors="pt", truncation=True)
        with torch.no_grad():
            logits = model(**inputs).logits[0]
        scores = torch.softmax(logits, dim=-1)
        return jsonify(label=labels[int(scores.argmax())], scores=[float(s) for s in scores])

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tritonfleet.bench.flask_app")
    p.add_argument("--model", required=True, help="Hugging Face model directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    args = p.parse_args(argv)
    app = create_app(args.model)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per request
    app.run(host=args.host, port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
