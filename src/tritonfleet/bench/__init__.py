"""`tritonfleet bench`: the serving benchmark (setups A Flask/eager, B article Triton, C this project, D offline).

See docs/BENCHMARK.md. Modules:
- `workload`: the W200 text mix and perf_analyzer's --input-data file;
- `loadgen`: closed-loop asyncio load generator (gRPC text/tensor, HTTP text), run as a subprocess;
- `flask_app`: setup A's server (Flask dev server, threaded, PyTorch eager, tokenizing per request);
- `offline`: setup D (onnxruntime session in-process, batch-size search), run as a subprocess;
- `procmon`: RSS and CPU of a process tree, sampled from /proc;
- `perfanalyzer`: locating and running NVIDIA's perf_analyzer;
- `runner`: the orchestration and the JSON report; `plot`: the PNG.
"""
