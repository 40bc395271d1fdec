"""Clips <-> latent files: frame/size planning, tiling, streaming encode/decode, the latent format, batches."""
