"""prepnet_jax: COVID-19 chest imaging in JAX/Flax (PrepNet, generative augmentation, classifiers).

Importing the package changes no global state; `main.py` (or a notebook, through
`prepnet_jax.runtime.jax_settings.configure`) chooses the PRNG implementation.
"""

__version__ = "0.1.0"
