"""The Wan2.1 / Wan2.2 video VAEs (Alibaba's Wan video models) behind pvvae's model protocol: their architecture
(``model``, ``layers``), config and presets (``config``), and the foreign weight formats they come in
(``checkpoint``: a diffusers ``AutoencoderKLWan`` folder or the original ``Wan2.x_VAE.pth``)."""
