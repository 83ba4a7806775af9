"""Weight interop with PyTorch checkpoints (NCHW/OIHW layouts live only here).

* `edm_pickle`: execution-free reader for NVIDIA EDM `.pkl` snapshots -> state_dict + kwargs;
  `edm_unpickler`: its restricted unpickler (the allowlist of globals, tensor decoding).
* `edm_state_dict`: EDM state_dict (PyTorch names) <-> Flax variables, `.safetensors`/`.pt` I/O.
* `pixart`: diffusers PixArtTransformer2DModel folders <-> Flax params, export to diffusers;
  `pixart_original`: original PixArt `.pth` names (fused qkv / kv).
"""
