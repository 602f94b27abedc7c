"""jprop's benchmarks: run each from the repository root as `python -m benchmarks.<name>`
(`closed_forms`, `jprop_gradients`, `pinn_step`, `weight_curvature`, `eager`, and `run` for the
whole grid); `benchmarks.harness` holds the timing race they share."""
