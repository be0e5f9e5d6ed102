"""tests/gpu holds scripts run by hand on a CUDA machine (CI has no GPU): pytest skips them."""

collect_ignore = ["qlora_smoke.py", "cuda_paths.py"]
