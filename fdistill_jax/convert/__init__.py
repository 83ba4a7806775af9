"""Weight interop with PyTorch checkpoints (NCHW/OIHW layouts live only here).

* `edm_pickle`: execution-free reader for NVIDIA EDM `.pkl` snapshots -> state_dict + kwargs;
  `edm_unpickler`: its restricted unpickler (the allowlist of globals, tensor decoding).
* `state_dict_io`: state_dict `.safetensors`/`.pt` I/O (checked before torch.load) and matching a
  torch-named state_dict against a module's names and shapes, for every converter;
* `edm_state_dict`: EDM state_dict (PyTorch names) <-> Flax variables, precond_kwargs metadata.
* `pixart`: diffusers PixArtTransformer2DModel folders <-> Flax params, export to diffusers;
  `pixart_original`: original PixArt `.pth` names (fused qkv / kv).
"""
