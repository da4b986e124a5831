"""`tritonfleet bench`: the serving benchmark (setups A Flask/eager, B article Triton, C this project, D offline,
R Ray Serve).

See docs/BENCHMARK.md. Modules:
- `runner`: `BenchConfig` and the `Harness` (measuring a server, running the setups, writing the JSON report);
- `artifacts`: the benchmark's model and conversion artifacts (cached by conversion key), and the int8 policy;
- `setups`: setups A, B, C, D, R (and G), and setup C's candidates (ModelOptions field names);
- `scoring`: setup C's choice among candidates, the targets and the summary lines;
- `servers`: tritonserver and the Flask server as measured processes, and the python helpers' JSON;
- `workload`: the W200 text mix and perf_analyzer's --input-data file;
- `loadgen`: closed-loop asyncio load generator (gRPC text/tensor, HTTP text), run as a subprocess;
- `flask_app`: setup A's server (Flask dev server, threaded, PyTorch eager, tokenizing per request);
- `ray_app`: setup R's server (Ray Serve, @serve.batch, C's ONNX Runtime model and CPU budget);
- `offline`: setup D (onnxruntime session in-process, batch-size search), run as a subprocess;
- `procmon`: RSS and CPU of a process tree, sampled from /proc, and other jobs' CPU;
- `perfanalyzer`: locating and running NVIDIA's perf_analyzer;
- `plot`: the PNG.
"""
