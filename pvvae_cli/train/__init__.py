"""Training: run config, the predictive objective, losses, discriminator, data, and the trainer."""
