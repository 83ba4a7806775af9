"""PyTorch reference of the f-distill step, for the JAX-vs-PyTorch benchmark only.

Written from the architecture description (EDM, Karras et al. 2022, arXiv 2206.00364) and this project's Flax
port (fdistill_jax/models/edm), not copied from EDM or FastGen. NCHW, with EDM's state_dict
names, so the weights of a Flax run load through `fdistill_jax.convert.edm_state_dict`:

* `networks`: SongUNet (DDPM++), DhariwalUNet (ADM), EDMPrecond, `build_edm_precond`.
* `fdistill`: FastGen's discriminator head, the f-distill generator and critic losses (the
  maths of fdistill_jax/methods/fdistill.py) and `TorchFDistill`, the two train steps run the
  way FastGen runs them (AdamW, optional bf16 autocast / channels_last / torch.compile / fused
  AdamW / activation checkpointing), plus EDM's Heun sampler.

The core package never imports this subpackage; torch is imported only here.
"""
