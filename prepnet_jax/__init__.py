"""prepnet_jax: COVID-19 chest imaging in JAX/Flax (PrepNet, generative augmentation, classifiers)."""

__version__ = "0.1.0"
