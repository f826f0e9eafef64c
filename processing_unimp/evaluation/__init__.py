"""Evaluation (never shipped): the one ranking protocol, task evaluation of UniMP, metrics, image-generation scores."""
