"""``gen``: a Latte-style latent video diffusion transformer trained with rectified flow on pvvae latent files.

One concept per module: ``config`` (architecture + presets), ``model`` (the network, knows nothing of noise),
``flow`` (the noising path and loss), ``sampler`` (Euler + classifier-free guidance), ``data`` (latent folders),
``train_config`` + ``trainer`` (the run, on ``pvvae_cli.train``'s machinery), ``weights`` (the weights folder),
``evaluation`` (latent-space sample statistics and the evaluation hook), ``generate`` (sample, decode, write).
"""
