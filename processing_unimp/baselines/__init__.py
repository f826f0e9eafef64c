"""Baselines (never shipped): Popularity, ItemKNN, content and SASRec recommenders, and each other task's floor."""
