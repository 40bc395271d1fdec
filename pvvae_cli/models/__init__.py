"""Autoencoder families behind one protocol: shared causal layers, the weights folder format, and one room per
family (``pvvae/``; IV-VAE and Wan come with their own rooms)."""
