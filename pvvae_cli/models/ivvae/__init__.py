"""The IV-VAE family (Wu et al., CVPR 2025): group causal convolution (GCConv) and keyframe temporal compression
(KTC). ``IVVAEConfig`` (frozen architecture + presets registry), ``IVVAE`` (the network), ``GroupCausalConv3d``
(the convolution), ``reference_keys`` (the published checkpoints' state-dict layout)."""
