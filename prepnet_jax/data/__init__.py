"""Datasets: the built-in chest phantom, real-dataset TFDS builders, transforms and grain pipelines."""
