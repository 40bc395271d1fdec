"""The PV-VAE family: ``VAEConfig`` (frozen architecture + presets registry) and ``VideoVAE`` (the network)."""
