"""The diffusability study (issue 17): predictive vs reconstruction-only latents for latent diffusion."""
