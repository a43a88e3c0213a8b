"""Losses: classification and PrepNet (`classification`), GAN/VAE (`gan`), StyleGAN2 (`stylegan2`)."""
