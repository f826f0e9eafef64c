"""Benchmark runs (never shipped): UniMP variants against the baselines, ranking speed, image generation, GPU check."""
