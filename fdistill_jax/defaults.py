"""Default configs that experiment files in configs/ start from (one function per family)."""
import ml_collections


def toy() -> ml_collections.ConfigDict:
  """Toy problems: exact Gaussian-mixture teacher, MLP student, f-distill JS."""
  cfg = ml_collections.ConfigDict()
  cfg.seed = 0

  cfg.teacher = ml_collections.ConfigDict(dict(
      kind="gmm", mixture="ring", num_modes=8, radius=2.0, scale=0.1, dim=2, spread=2.0,
      mixture_seed=0, weights=(1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0)))
  cfg.diffusion = ml_collections.ConfigDict(dict(
      sigma_min=0.002, sigma_max=80.0, sigma_data=1.5, sigma_init=80.0))
  cfg.student = ml_collections.ConfigDict(dict(hidden=128, depth=3))
  cfg.disc = ml_collections.ConfigDict(dict(enabled=True, hidden=128, depth=2))
  cfg.pretrain = ml_collections.ConfigDict(dict(
      steps=3000, batch=512, lr=2e-3, p_mean=-0.4, p_std=1.4, seed=0))

  cfg.method = ml_collections.ConfigDict(dict(
      name="fdistill", divergence="js", critic_steps=1,
      ratio_normalization=True, ratio_ema=0.0, ratio_bins=10, ratio_lower=0.1, ratio_upper=20.0,
      logit_clip=10.0, gan_weight_gen=1e-2, gan_weight_disc=1.0, r1_weight=0.0,
      disc_features="teacher", dsm_weighting="edm", time_lo=0.002, time_hi=0.998,
      dm_normalize=True))

  opt = lambda lr, clip: ml_collections.ConfigDict(dict(
      lr=lr, b1=0.0, b2=0.99, eps=1e-8, weight_decay=0.0, clip=clip))
  cfg.optim = ml_collections.ConfigDict(dict(
      generator=opt(3e-4, 10.0), fake_score=opt(1e-3, 10.0), discriminator=opt(1e-3, 10.0)))

  cfg.train = ml_collections.ConfigDict(dict(
      steps=5000, batch_size=512, grad_accum=1, ema_decays=(0.99,), log_every=250,
      eval_every=0, ckpt_every=2500, keep_checkpoints=2, async_checkpoints=True,
      max_nonfinite_streak=20))
  cfg.mesh = ml_collections.ConfigDict(dict(
      data=-1, fsdp=1, default_tactic="replicate", rules=(), fsdp_min_size=2 ** 14))
  cfg.eval = ml_collections.ConfigDict(dict(num_samples=8192, teacher_nfe=35, params="raw"))
  return cfg


def image() -> ml_collections.ConfigDict:
  """Image problems with an EDM teacher (digits by default); experiment files override."""
  cfg = toy()
  cfg.teacher = ml_collections.ConfigDict(dict(
      kind="edm", checkpoint="", dtype="float32", remat=False, init_seed=0,
      precond_kwargs=dict(
          model_type="SongUNet", img_resolution=16, img_channels=1, label_dim=10, augment_dim=0,
          model_channels=16, channel_mult=(1, 2, 2), num_blocks=1, attn_resolutions=(8,),
          dropout=0.0, embedding_type="positional", encoder_type="standard",
          decoder_type="standard", channel_mult_noise=1, resample_filter=(1, 1),
          sigma_data=0.5)))
  cfg.dataset = ml_collections.ConfigDict(dict(name="digits", resolution=16, split="train",
                                               use_labels=True, xflip=False))
  cfg.diffusion = ml_collections.ConfigDict(dict(
      sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, sigma_init=80.0))
  del cfg.student, cfg.pretrain
  cfg.disc = ml_collections.ConfigDict(dict(enabled=True, feature_keys=("enc16", "enc8"),
                                            channels=64))
  cfg.method.dsm_weighting = "none"   # FastGen: unweighted x0 MSE for the fake score.
  cfg.method.gan_weight_gen = 1e-3
  cfg.method.p_mean, cfg.method.p_std = -1.2, 1.2
  opt = lambda lr, clip, b1=0.9: ml_collections.ConfigDict(dict(
      lr=lr, b1=b1, b2=0.999, eps=1e-8, weight_decay=0.01, clip=clip))
  cfg.optim = ml_collections.ConfigDict(dict(
      generator=opt(1e-4, 10.0), fake_score=opt(1e-4, 0.0), discriminator=opt(1e-4, 0.0)))
  cfg.train.update(dict(steps=2000, batch_size=64, ema_decays=(0.999,), log_every=100,
                        ckpt_every=1000))
  cfg.mesh.default_tactic = "fsdp"
  cfg.eval = ml_collections.ConfigDict(dict(
      num_samples=500, sampler="one_step", nfe=35, params="0.999", teacher_nfes=(1, 2, 4, 35),
      metric="auto", cache_dir=""))
  return cfg
