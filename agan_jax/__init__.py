"""agan_jax: single-image GANs (AGAN, SinGAN, ConSinGAN) in JAX/Flax."""

__version__ = "0.2.0"
