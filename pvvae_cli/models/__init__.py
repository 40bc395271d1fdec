"""Autoencoder families behind one protocol (``protocol.VideoAutoencoder``): shared causal layers, the weights
folder format (``weights``), the registry of families and ``load_model`` (``registry``), and one room per family
(``pvvae/``, ``ivvae/``)."""
