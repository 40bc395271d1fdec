"""The run engine: what every training run shares, whatever it trains (VAE stages, gen's DiT).

``run.Run`` is the skeleton (device, process group, run folder, the validate/checkpoint/stop/log loop, export);
``checkpoints`` the run folder and its checkpoint files; ``run_log`` the metrics log and messages; ``stop`` the
clean stop on a signal; ``ema`` the weight average; ``rng`` the random streams; ``optim`` AdamW and its schedule.
Trainers (``train.trainer``, ``gen.trainer``) keep only their step.
"""
