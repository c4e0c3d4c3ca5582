"""Datasets: the registry of names, the file readers, and the seeded in-memory train/dev/test subsets.
"""
