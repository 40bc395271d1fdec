"""Training. PV-VAE specific: ``config`` (the run config), ``objective``, ``losses``, ``discriminator``, ``data``,
``synthetic``, ``build`` (model and optimisers), ``validation``, ``model_card`` and ``trainer`` (the loop). Free of
any model, for every trainer: ``checkpoints`` (run folder), ``state`` (lr schedule, EMA, random streams),
``run_log``, ``stop`` (clean stop on signals), with ``runtime.distributed``."""
