"""Default configs that experiment files in configs/ start from (one function per family)."""
import ml_collections

from fdistill_jax.diffusion import few_step
from fdistill_jax.methods import fdistill

# config.eval.metric of the image and text-to-image configs, and what their evaluators and checks
# read when a config omits it (experiments.eval_metric): 'auto' picks the digits metric on the
# digits dataset (pixel space) and none elsewhere.
EVAL_METRIC = "auto"


def optim_config(lr: float, *, b1: float, b2: float, weight_decay: float,
                 clip: float) -> ml_collections.ConfigDict:
  """One network's optimiser block (engine/state.make_optimizer): AdamW at `lr`, constant by
  default; schedule='cosine' decays it over the network's own updates to end_lr_ratio · lr.
  nan_to_num / clip_value: the official Uni-Instruct trainer's gradient repair (non-finite
  entries replaced) and elementwise clip, off by default."""
  return ml_collections.ConfigDict(dict(lr=lr, b1=b1, b2=b2, eps=1e-8, weight_decay=weight_decay,
                                        clip=clip, schedule="constant", end_lr_ratio=0.0,
                                        nan_to_num=False, clip_value=0.0))


def toy() -> ml_collections.ConfigDict:
  """Toy problems: exact Gaussian-mixture teacher, MLP student, f-distill JS."""
  cfg = ml_collections.ConfigDict()
  cfg.seed = 0

  cfg.teacher = ml_collections.ConfigDict(dict(
      kind="gmm", mixture="ring", num_modes=8, radius=2.0, scale=0.1, dim=2, spread=2.0,
      mixture_seed=0, weights=(1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0),
      grid_size=5, spacing=1.0, means=(), scales=(), file=""))
  cfg.diffusion = ml_collections.ConfigDict(dict(
      sigma_min=0.002, sigma_max=80.0, sigma_data=1.5, sigma_init=80.0))
  cfg.student = ml_collections.ConfigDict(dict(hidden=128, depth=3))
  cfg.disc = ml_collections.ConfigDict(dict(enabled=True, hidden=128, depth=2))
  cfg.pretrain = ml_collections.ConfigDict(dict(
      steps=3000, batch=512, lr=2e-3, p_mean=-0.4, p_std=1.4, seed=0))

  cfg.method = fdistill.method_config(divergence="js")
  # A K-step student (diffusion/few_step.py): sigmas σ_1 = sigma_init > … > σ_K; () = one step.
  cfg.few_step = few_step.config()

  opt = lambda lr, clip: optim_config(lr, b1=0.0, b2=0.99, weight_decay=0.0, clip=clip)
  cfg.optim = ml_collections.ConfigDict(dict(
      generator=opt(3e-4, 10.0), fake_score=opt(1e-3, 10.0), discriminator=opt(1e-3, 10.0)))

  cfg.train = ml_collections.ConfigDict(dict(
      steps=5000, batch_size=512, grad_accum=1, ema_decays=(0.99,),
      # > 0: EDM/SiD half-life ramp-up of every EMA track, half-life <= ema_rampup x updates so far.
      ema_rampup=0.0, log_every=250,
      eval_every=0, ckpt_every=2500, keep_checkpoints=2, async_checkpoints=True,
      max_nonfinite_streak=20, tensorboard=True,
      # When checkpoints exist but none verifies the run stops; these say how to go on: start
      # from step 0 (unverifiable steps are kept in checkpoints/corrupt/), or adopt steps
      # written without an integrity record after checking their layout and finiteness.
      restart_from_scratch=False, adopt_unverified_checkpoints=False,
      # False: the run ends at its last checkpoint; `--mode=eval` scores it later (pods whose
      # final FID is run as a separate job).
      final_eval=True))
  cfg.mesh = ml_collections.ConfigDict(dict(
      data=-1, fsdp=1, default_tactic="replicate", rules=(), fsdp_min_size=2 ** 14))
  # score_raw: a final evaluation of an EMA also scores the raw parameters it averages.
  cfg.eval = ml_collections.ConfigDict(dict(num_samples=8192, teacher_nfe=35, params="raw",
                                            score_raw=True))
  return cfg


def toy_score_distill(method_config, **method_overrides) -> ml_collections.ConfigDict:
  """defaults.toy() with the toy settings of the score-based methods (SiD, SIM, Uni-Instruct;
  configs/toy2d_sid.py): method_config(**method_overrides) with its fake score trained at the
  toy pretraining's σ law, σ_init 2.5, no separate discriminator, Adam β = (0, 0.999), 2,000
  steps. method_config: a method module's method_config function."""
  cfg = toy()
  cfg.method = method_config(fake_p_mean=cfg.pretrain.p_mean, fake_p_std=cfg.pretrain.p_std,
                             **method_overrides)
  cfg.diffusion.sigma_init = 2.5
  cfg.disc.enabled = False
  cfg.optim.generator.b2 = 0.999
  cfg.optim.fake_score.b2 = 0.999
  cfg.train.steps = 2000
  return cfg


def dataset_config(**overrides) -> ml_collections.ConfigDict:
  """The dataset block, carrying the keys of every source (data.make_source), so any source can
  be chosen from the command line on any config, e.g. `--config.dataset.name=edm_zip
  --config.dataset.path=cifar10-32x32.zip`; "" means unset."""
  cfg = ml_collections.ConfigDict(dict(
      name="digits", resolution=16, split="train", use_labels=True, xflip=False,
      path="",                                  # edm_zip / folder / arrays (.npz)
      tfds_name="", data_dir="", image_key="image", label_key="label", reader="auto"))  # tfds
  cfg.update(overrides)
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
  cfg.dataset = dataset_config(name="digits", resolution=16)
  cfg.diffusion = ml_collections.ConfigDict(dict(
      sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, sigma_init=80.0))
  del cfg.pretrain
  # init_checkpoint: the generator starts from this distilled network of the teacher's
  # architecture (EDM teachers; e.g. SiD's generator, as the official Uni-Instruct runs do) while
  # the fake score starts from the teacher; '' = both from the teacher.
  cfg.student = ml_collections.ConfigDict(dict(init_checkpoint=""))
  cfg.disc = ml_collections.ConfigDict(dict(enabled=True, feature_keys=("enc16", "enc8"),
                                            channels=64))
  cfg.method.dsm_weighting = "none"   # FastGen: unweighted x0 MSE for the fake score.
  cfg.method.gan_weight_gen = 1e-3
  cfg.method.p_mean, cfg.method.p_std = -1.2, 1.2
  opt = lambda lr, clip, b1=0.9: optim_config(lr, b1=b1, b2=0.999, weight_decay=0.01, clip=clip)
  cfg.optim = ml_collections.ConfigDict(dict(
      generator=opt(1e-4, 10.0), fake_score=opt(1e-4, 0.0), discriminator=opt(1e-4, 0.0)))
  cfg.train.update(dict(steps=2000, batch_size=64, ema_decays=(0.999,), log_every=100,
                        ckpt_every=1000))
  cfg.mesh.default_tactic = "fsdp"
  cfg.eval = ml_collections.ConfigDict(dict(
      num_samples=500, sampler="one_step", nfe=35, params="0.999", teacher_nfes=(1, 2, 4, 35),
      metric=EVAL_METRIC, cache_dir="", score_raw=True))
  return cfg


EDM_CIFAR10_COND = dict(  # edm-cifar10-32x32-cond-vp (models.md §1.1): 55,735,299 parameters.
    model_type="SongUNet", img_resolution=32, img_channels=3, label_dim=10, augment_dim=9,
    model_channels=128, channel_mult=(2, 2, 2), channel_mult_emb=4, num_blocks=4,
    attn_resolutions=(16,), dropout=0.13, embedding_type="positional", channel_mult_noise=1,
    encoder_type="standard", decoder_type="standard", resample_filter=(1, 1), sigma_data=0.5)
EDM_IMAGENET64_ADM = dict(  # edm-imagenet-64x64-cond-adm: 295,899,267 parameters.
    model_type="DhariwalUNet", img_resolution=64, img_channels=3, label_dim=1000, augment_dim=0,
    model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_emb=4, num_blocks=3,
    attn_resolutions=(32, 16, 8), dropout=0.1, sigma_data=0.5)


def fastgen_edm(dataset: str) -> ml_collections.ConfigDict:
  """f-distill on NVIDIA's EDM teachers with FastGen's published hyperparameters.

  dataset: 'cifar10' (FastGen config_f_distill_cifar10: batch 2048, lr 1e-4, λ_G 1e-3, heads on
  the teacher's 32/16/8 encoder maps, ratio EMA 0, 100k iterations) or 'imagenet64'
  (config_f_distill_in64: batch 512, lr 2e-6, λ_G 3e-3, one head on the 8×8 bottleneck, ratio
  EMA 0.5, 600k iterations). Both: AdamW (0.9, 0.999) wd 0.01 for all nets, generator gradient
  clipped at 10, σ_init = 80, critic_steps 4 (FastGen student_update_freq 5), unweighted DSM,
  EMAs 0.9999/0.99995/0.9996. R1 is 0 as in FastGen (the paper lists γ = 1 for CIFAR-10).
  """
  cfg = image()
  cifar = dataset == "cifar10"
  if not cifar and dataset != "imagenet64":
    raise ValueError(f"dataset must be 'cifar10' or 'imagenet64', got {dataset!r}")
  cfg.teacher.precond_kwargs = ml_collections.ConfigDict(
      dict(EDM_CIFAR10_COND if cifar else EDM_IMAGENET64_ADM))
  cfg.teacher.dtype = "bfloat16"  # bf16 compute, fp32 master weights (DMD2: fp16 diverged).
  cfg.teacher.remat = True
  cfg.dataset = dataset_config(
      name="tfds", tfds_name="cifar10" if cifar else "imagenet_resized/64x64",
      resolution=32 if cifar else 64)
  cfg.disc = ml_collections.ConfigDict(dict(
      enabled=True, feature_keys=("enc32", "enc16", "enc8") if cifar else ("bottleneck",),
      channels=256 if cifar else 768))
  lr = 1e-4 if cifar else 2e-6
  opt = lambda clip: optim_config(lr, b1=0.9, b2=0.999, weight_decay=0.01, clip=clip)
  cfg.optim = ml_collections.ConfigDict(dict(generator=opt(10.0), fake_score=opt(0.0),
                                             discriminator=opt(0.0)))
  cfg.method.update(dict(
      name="fdistill", divergence="kl" if cifar else "js", critic_steps=4,
      ratio_normalization=True, ratio_ema=0.0 if cifar else 0.5, gan_weight_gen=1e-3 if cifar else 3e-3,
      gan_weight_disc=1.0, r1_weight=0.0, disc_features="teacher", dsm_weighting="none"))
  # ema_rampup 0.05 (EDM's and SiD's ratio): without it CIFAR-10's evaluated 0.9999-EMA would
  # still hold 0.9999^20,000 = 13.5 % of the initial weights after its 20k generator updates.
  cfg.train.update(dict(steps=100_000 if cifar else 600_000, batch_size=2048 if cifar else 512,
                        ema_decays=(0.9999, 0.99995, 0.9996), ema_rampup=0.05, log_every=100,
                        ckpt_every=5000, eval_every=10_000, keep_checkpoints=3))
  cfg.eval.update(dict(num_samples=50_000, params="0.9999", teacher_nfes=(), metric="fid",
                       fid_weights="", fid_reference=""))
  return cfg


def digits_teacher(label_dropout: float = 0.0) -> ml_collections.ConfigDict:
  """EDM training of the small digits teacher (configs/teachers/digits*.py): 2,700 steps at
  batch 32, lr 1e-3, dropout 0.1, 0.999-EMA evaluated with the 35-NFE Heun sampler.
  label_dropout > 0 teaches it an unconditional branch (the zero label) for CFG."""
  cfg = image()
  cfg.method.name = "edm_training"
  cfg.teacher.precond_kwargs.dropout = 0.1
  if label_dropout:
    cfg.teacher.precond_kwargs.label_dropout = label_dropout
  cfg.disc.enabled = False
  cfg.optim.generator.lr = 1e-3
  cfg.optim.generator.weight_decay = 0.0
  cfg.train.update(dict(steps=2700, batch_size=32, ema_decays=(0.999,), log_every=100,
                        ckpt_every=500, eval_every=1000))
  cfg.eval.update(dict(sampler="heun", nfe=35, params="0.999", teacher_nfes=()))
  return cfg


def asset(name: str) -> str:
  """Absolute path of a file packaged in fdistill_jax/assets."""
  import os
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", name)


def digits_distill(divergence: str = "js") -> ml_collections.ConfigDict:
  """f-distill of the packaged digits teacher (the offline quickstart recipe)."""
  cfg = image()
  cfg.teacher.checkpoint = asset("digits_teacher.safetensors")
  cfg.method.divergence = divergence
  cfg.method.critic_steps = 1
  for net in ("generator", "fake_score", "discriminator"):
    cfg.optim[net].lr = 2e-4
  # ema_rampup 0.5: the 0.99-EMA's half-life is at most half the updates so far, so after 300
  # generator updates it holds none of the initial weights (0.99^300 = 4.9 % without it).
  cfg.train.update(dict(steps=600, batch_size=32, ema_decays=(0.99,), ema_rampup=0.5,
                        log_every=50, ckpt_every=200))
  cfg.eval.update(dict(num_samples=500, sampler="one_step", params="0.99",
                       teacher_nfes=(1, 2, 4, 35)))
  return cfg


def digits_quickstart() -> ml_collections.ConfigDict:
  """The quickstart's recipe (configs/digits_js.py, where it is measured; digits_js_4step.py)."""
  cfg = digits_distill("js")
  cfg.method.critic_steps = 3
  cfg.method.dsm_weighting = "edm"
  for net, lr in (("generator", 6e-4), ("fake_score", 2e-3), ("discriminator", 3e-4)):
    cfg.optim[net].lr = lr
  # The measured recipe's constant 0.98-EMA: after 300 generator updates it keeps 0.98^300 =
  # 0.2 % of the initial weights (a ramped 0.99 track scored the same, BENCHMARKS.md).
  cfg.train.update(dict(steps=1200, ckpt_every=400, ema_decays=(0.98,), ema_rampup=0.0))
  cfg.eval.params = "0.98"
  return cfg


def half_life_decay(batch: int, half_life_mimg: float) -> float:
  """Per-iteration EMA decay of a half-life given in million images (EDM / SiD convention):
  0.5^(batch / half-life), rounded to 6 digits so it names a readable EMA track."""
  return round(0.5 ** (batch / (half_life_mimg * 1e6)), 6)


def sid_style(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """SiD's (and SIM's) shared settings on top of an image config, in place: generator input
  σ_init = 2.5, no discriminator, Adam β = (0, 0.999) without weight decay or clipping for the
  generator and the fake score (learning rates are kept)."""
  cfg.diffusion.sigma_init = 2.5
  cfg.disc.enabled = False
  for net in ("generator", "fake_score"):
    cfg.optim[net].update(dict(b1=0.0, b2=0.999, eps=1e-8, weight_decay=0.0, clip=0.0))
  return cfg


def sid_edm(dataset: str) -> ml_collections.ConfigDict:
  """SiD on NVIDIA's EDM teachers with the released SiD recipe (Zhou et al. 2024, arXiv 2404.04057, mingyuanzhou/SiD).

  'cifar10' (conditional): batch 256, lr 1e-5, fp32, 800 Mimg; 'imagenet64': batch 8192, lr
  4e-6, 1000 Mimg (SiD trains it in fp16; we use bf16 compute with fp32 master weights). Both:
  α = 1.2, σ_init = 2.5, t_max = 800, Adam β = (0, 0.999), EMA half-life 0.5 Mimg (as a
  per-iteration decay) with SiD's ramp-up ratio 0.05 (train.ema_rampup), no real data. Losses
  scaled as the official code back-propagates them (sid.OFFICIAL_SCALING: 100/B·Σ for the
  generator, 1/B·Σ over pixels for the fake score); Adam ε 1e-6 for ImageNet-64, as SiD sets it
  for its fp16 runs. The fake score trains on EDM-augmented generator samples with p = 0.12 for
  CIFAR-10 (SiD's --augment default; its teacher has augment_dim 9) and none for ImageNet-64
  (--augment 0).
  """
  cfg = fastgen_edm(dataset)
  cifar = dataset == "cifar10"
  from fdistill_jax.methods import sid  # Not at module level: methods import defaults' users.
  cfg.method = sid.method_config(alpha=1.2, augment_p=0.12 if cifar else 0.0,
                                 **sid.OFFICIAL_SCALING)
  sid_style(cfg)
  if not cifar:
    for net in ("generator", "fake_score"):
      cfg.optim[net].eps = 1e-6  # sid_train.py: eps = 1e-8 if not opts.fp16 else 1e-6.
  batch, lr, mimg = (256, 1e-5, 800) if cifar else (8192, 4e-6, 1000)
  cfg.teacher.dtype = "float32" if cifar else "bfloat16"
  for net in ("generator", "fake_score"):
    cfg.optim[net].lr = lr
  ema = half_life_decay(batch, 0.5)
  cfg.train.update(dict(batch_size=batch, steps=int(mimg * 1e6 // batch), ema_decays=(ema,),
                        ema_rampup=0.05))
  cfg.eval.params = str(ema)
  return cfg


def uni_edm(dataset: str, divergence: str = "fkl") -> ml_collections.ConfigDict:
  """Uni-Instruct on NVIDIA's EDM teachers with the released recipe (Wang et al. 2025, arXiv
  2505.20755; a-little-hoof/Uni_Instruct run_uni_instruct.sh, 'cifar10-cond-sid' and
  'imagenet64-cond-sid').

  SiD's released settings (sid_edm: σ_init 2.5, t_max 800, Adam β = (0, 0.999), lr 1e-5 / 4e-6,
  batch 256 / 8192, Adam ε 1e-6 at ImageNet-64, the EDM teachers' dropout 0.13 / 0.1, fake-score
  augmentation p = 0.12 on CIFAR-10 and none on ImageNet-64), with the Uni-Instruct loss in the
  code's units (uni_instruct.OFFICIAL_SCALING: --lsg 100 --lsg_gan 0.01 --ls 1 --lsd 1), α = 1
  (the code's SiD term), the code's ratio (method.ratio 'official', no in-batch normalisation:
  --variance_reduction 0), no generator update before 100 kimg and plain SiD before 200 kimg
  (converted to generator steps: floor(images/batch) + 1), 300 Mimg (--duration 300), EMA
  half-life 0.5 Mimg on CIFAR-10 and 2 Mimg on ImageNet-64 (--ema 2), ramp-up 0.05. The code's
  gradient handling before each optimizer step: non-finite entries replaced (NaN → 0, ±inf →
  ±1e5) for generator and fake score (optim.<net>.nan_to_num), and, as --use_gan is on, the
  fake score's gradient clipped elementwise to |g| ≤ 1 (optim.fake_score.clip_value). The code
  starts its generator from a SiD checkpoint (--sid_model): student.init_checkpoint.
  """
  cfg = sid_edm(dataset)
  cifar = dataset == "cifar10"
  from fdistill_jax.methods import uni_instruct  # Not at module level (see sid_edm).
  batch = cfg.train.batch_size
  cfg.method = uni_instruct.method_config(
      divergence=divergence, ratio="official", ratio_normalization="none", alpha=1.0,
      augment_p=0.12 if cifar else 0.0,
      generator_start_step=uni_instruct.OFFICIAL_GENERATOR_START_IMAGES // batch + 1,
      divergence_start_step=uni_instruct.OFFICIAL_DIVERGENCE_START_IMAGES // batch + 1,
      **uni_instruct.OFFICIAL_SCALING)
  # fsim_training_loop.py: nan_to_num on both nets' gradients; clip_grad_value_(1) on the fake
  # score's whenever --use_gan (on in the released runs, whatever the divergence: its fake-score
  # step always trains the discriminator logit, as ours does).
  for net in ("generator", "fake_score"):
    cfg.optim[net].nan_to_num = True
  cfg.optim.fake_score.clip_value = 1.0
  ema = half_life_decay(batch, 0.5 if cifar else 2.0)
  cfg.train.update(dict(steps=int(300e6 // batch), ema_decays=(ema,), ema_rampup=0.05))
  cfg.eval.params = str(ema)
  return cfg


TINY_PIXART = dict(  # A PixArt-architecture transformer for 16×16 one-channel pixels (tests, digits).
    num_attention_heads=2, attention_head_dim=16, in_channels=1, out_channels=2, num_layers=2,
    cross_attention_dim=32, caption_channels=32, attention_bias=True, sample_size=16,
    patch_size=2, norm_eps=1e-6, interpolation_scale=None, use_additional_conditions=False)


def t2i() -> ml_collections.ConfigDict:
  """Text-to-image problems with a PixArt-α teacher (experiments/t2i.py); defaults: a tiny
  pixel-space PixArt on 16×16 digits paired with prompts by class, f-distill JS with a token
  head on the last block. Experiment files set teacher.checkpoint / prompt_cache / vae.

  σ range: the DDPM-ε adapter covers [0.0100, 157.4] (linear β schedule, 1000 steps); EDM's
  σ_min 0.002 lies outside, so σ_min = 0.02 and σ_max = σ_init = 80 here.
  """
  cfg = image()
  cfg.teacher = ml_collections.ConfigDict(dict(
      kind="pixart", checkpoint="", pixart_config=dict(TINY_PIXART), dtype="float32",
      compute_dtype="float32", final_float32=False, remat=False, init_seed=0, ema=False,
      prompt_cache="", vae=""))
  cfg.dataset = dataset_config(name="digits", resolution=16)
  cfg.dataset.captions = "class"
  cfg.diffusion = ml_collections.ConfigDict(dict(
      sigma_min=0.02, sigma_max=80.0, sigma_data=0.5, sigma_init=80.0))
  # A student that takes the guidance scale as an input (experiments/t2i.py): training draws w
  # per sample from [w_min, w_max] and guides the teacher at it; evaluation uses
  # eval.guidance_scale (one checkpoint serves every w).
  cfg.guidance_input = ml_collections.ConfigDict(dict(enabled=False, w_min=1.0, w_max=3.0))
  cfg.disc = ml_collections.ConfigDict(dict(enabled=True, feature_keys=("block1",),
                                            channels=32))
  # per_prompt_samples: samples per prompt of the digits metric's per-prompt set (held-out
  # accuracy, within-prompt diversity; 0 = off); reference_cache: folder for the teacher's
  # samples ('' = in memory only; t2i_eval).
  cfg.eval.update(dict(sampler="one_step", nfe=20, teacher_nfes=(1, 2, 4, 35),
                       metric=EVAL_METRIC, guidance_scale=1.0,
                       teacher_solver="dpm_solver_pp_2m", num_prompts=16, grid_size=16,
                       batch_size=0, per_prompt_samples=0, per_prompt_train=1,
                       reference_cache=""))
  return cfg


# σ of Stable Diffusion 1.x's DDPM steps (scaled_linear β 0.00085 → 0.012): the noise levels
# the SD references distil at, in the SD-VAE latent space PixArt-α shares.
SD_SIGMA_T1, SD_SIGMA_T20, SD_SIGMA_T979, SD_SIGMA_MAX = 0.041314, 0.137991, 12.96632, 14.614641


def sd_sigmas(timesteps) -> tuple[float, ...]:
  """σ = √((1 − ᾱ_t)/ᾱ_t) of SD 1.x's DDPM steps t (scaled_linear β 0.00085 → 0.012), float64:
  the references' few-step lists in σ (DMD2's 4-step [999, 749, 499, 249] is 14.61, 4.08, 1.61,
  0.693)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from fdistill_jax.diffusion import ddpm  # pylint: disable=import-outside-toplevel
  abar = np.cumprod(1.0 - ddpm.make_betas("scaled_linear", 1000, 0.00085, 0.012))
  return tuple(float(np.sqrt((1.0 - abar[t]) / abar[t])) for t in timesteps)


# DMD2's SDXL 4-step timesteps (tianweiy/DMD2 experiments/sdxl: denoising 4 steps from t 999).
DMD2_4STEP_TIMESTEPS = (999, 749, 499, 249)


def eps_teacher(cfg: ml_collections.ConfigDict, sigma_min: float | None = None,
                sigma_max: float = SD_SIGMA_MAX) -> ml_collections.ConfigDict:
  """Noise levels and fake-score loss for an ε-prediction (DDPM) teacher, in place, for any
  method (issue 25 §2). Its x0 = x − σ·ε̂ carries σ times its ε error (and bfloat16's rounding),
  so distillation stays where that error is small and trains like the teacher was trained:
  * generator input σ_init = 2.5 (SiD, SIM-DiT; SiD-LSG's t_init 625 on SD; PixArt-DMD's t 400
    is σ 2.04): one-step x0 = x − 2.5·ε̂ instead of x − 157·ε̂;
  * σ ∈ [sigma_min, sigma_max] with sigma_max = SD's σ(999) = 14.6 (FastGen-SD, DMD2-SD and
    SiD-LSG never go above it), t uniform over the teacher's own timesteps there ('uniform_t',
    the DDPM training law and the references' draw) for the generator loss, the fake score
    (SiD/SIM: the same law, so the fake score is trained wherever the generator loss reads it)
    and f-distill's time bins ('law': equal shares);
  * the fake score's DSM loss weighted 1/σ²: the ε-MSE of DMD2-SD, SiD-LSG and PixArt-DMD.
  Measured on the digits text-to-image teachers: BENCHMARKS.md "Digits text-to-image students".
  """
  d, m = cfg.diffusion, cfg.method
  d.sigma_init, d.sigma_max = 2.5, sigma_max
  if sigma_min is not None:
    d.sigma_min = sigma_min
  m.sigma_law, m.dsm_weighting = "uniform_t", "eps"
  if "fake_sigma_law" in m:
    m.fake_sigma_law = "generator"
  if "ratio_bin_space" in m:
    m.ratio_bin_space = "law"
  return cfg


# σ of PixArt-α's DDPM steps (linear β 1e-4 → 0.02, 1000 steps): σ_t = √((1 − ᾱ_t)/ᾱ_t).
PIXART_SIGMA_T1, PIXART_SIGMA_T20, PIXART_SIGMA_T625 = 0.014831, 0.079398, 7.232539
PIXART_SIGMA_T979, PIXART_SIGMA_MAX = 128.8605, 157.4072  # t = 979, t = 999 (the adapter's max)


def pixart512() -> ml_collections.ConfigDict:
  """PixArt-XL-2-512x512 (600M, 28 blocks, 1152 wide, T5-XXL 4096-d captions of 120 tokens) in
  the SD-VAE latent space (64×64×4), bf16 compute with fp32 weights and remat; f-distill JS.

  Set teacher.checkpoint (the pipeline's transformer/ folder, or an original .pth),
  teacher.prompt_cache (tools/encode_prompts) and teacher.vae (the pipeline's vae/ folder).
  Without them the run builds, shards and steps on random weights and prompts with loud
  warnings (dataset 'synthetic': N(0, 1) latents). Noise levels are those of an ε-prediction
  teacher (`eps_teacher`: σ_init 2.5, t uniform over PixArt's timesteps with σ ≤ SD's 14.6, an
  ε-MSE fake score); each recipe sets its reference's σ range. The output layer computes in
  float32 (teacher.final_float32): bf16 D error at σ 2.5 / 14.6 is 0.008 / 0.034 rms with it
  against 0.011 / 0.051 without (the digits PixArt teacher, BENCHMARKS.md), both far below the
  teacher's own x0 error there; σ 80 / 157 would have cost 0.18 / 0.43. The 0.9999-EMA has
  EDM's ramp-up 0.05.
  """
  from fdistill_jax.convert import pixart as conv  # numpy/safetensors only
  cfg = t2i()
  cfg.teacher.update(dict(pixart_config=conv.pixart_alpha_config(512), compute_dtype="bfloat16",
                          final_float32=True, remat=True, max_length=120))
  cfg.dataset = dataset_config(name="synthetic", resolution=512)
  cfg.dataset.captions = "row"
  cfg.diffusion = ml_collections.ConfigDict(dict(
      sigma_min=SD_SIGMA_T1, sigma_max=SD_SIGMA_MAX, sigma_data=0.5, sigma_init=2.5))
  cfg.mesh.update(dict(default_tactic="fsdp", rules=tuple(pixart_sharding_rules()),
                       fsdp_min_size=2 ** 14))
  cfg.eval.update(dict(num_samples=64, batch_size=16, sampler="one_step", nfe=20,
                       teacher_nfes=(20,), metric="none", guidance_scale=1.75, num_prompts=64,
                       grid_size=16, params="0.9999"))
  cfg.train.update(dict(ema_decays=(0.9999,), ema_rampup=0.05, log_every=100, ckpt_every=2000,
                        eval_every=10_000, keep_checkpoints=3))
  return cfg


def pixart512_fastgen_optim(cfg: ml_collections.ConfigDict, steps: int) -> None:
  """FastGen's SD1.5 text-to-image schedule, shared by the f-distill and DMD2 PixArt recipes:
  batch 2048, AdamW (0.9, 0.999) wd 0.01 and lr 1e-5 for every net, generator gradient clip 10;
  one 1152-channel token head on block 13 (the middle of PixArt-XL's 28 blocks)."""
  cfg.disc.update(dict(enabled=True, feature_keys=("block13",), channels=1152))
  for net, clip in (("generator", 10.0), ("fake_score", 0.0), ("discriminator", 0.0)):
    cfg.optim[net].update(dict(lr=1e-5, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, clip=clip))
  cfg.train.update(dict(steps=steps, batch_size=2048))


def pixart512_sid_lsg_schedule(cfg: ml_collections.ConfigDict, batch: int = 512,
                               mimg: float = 10.0, half_life_mimg: float = 0.05) -> None:
  """SiD-LSG's data-free schedule (shared by the SiD-LSG and SIM PixArt recipes): SiD's Adam
  (sid_style) at lr 1e-6 for generator and fake score, `batch`, `mimg` million images, one EMA of
  half-life `half_life_mimg` Mimg (per-iteration decay 0.5^(batch / half-life)), no images."""
  sid_style(cfg)
  cfg.dataset.name = "prompts"
  for net in ("generator", "fake_score"):
    cfg.optim[net].lr = 1e-6
  # One generator and one fake-score update per SiD-LSG iteration: the engine alternates them,
  # so `mimg` of generator images take twice as many engine iterations (19,531 generator
  # updates for 10 Mimg at batch 512, as the official run).
  ema = half_life_decay(batch, half_life_mimg)
  cfg.train.update(dict(batch_size=batch, steps=2 * int(mimg * 1e6 // batch), ema_decays=(ema,),
                        ema_rampup=0.05))
  cfg.eval.params = str(ema)


def pixart512_dmd2() -> ml_collections.ConfigDict:
  """DMD2's SD1.5 recipe on PixArt-α 512 (configs/pixart512_dmd2.py gives each value's source;
  configs/pixart512_dmd2_4step.py adds the 4-step chain)."""
  cfg = pixart512()
  cfg.method.update(dict(
      name="fdistill", divergence="rkl", guidance_scale=1.75, critic_steps=9,
      ratio_normalization=False, gan_weight_gen=1e-3, gan_weight_disc=1e-2, r1_weight=0.0,
      disc_features="fake_score"))
  pixart512_fastgen_optim(cfg, steps=60_000)
  return eps_teacher(cfg, sigma_min=SD_SIGMA_T20, sigma_max=SD_SIGMA_T979)


def pixart_sharding_rules():
  from fdistill_jax.models import pixart
  return pixart.sharding_rules()

DIGITS_T2I_PIXART = dict(  # The digits text-to-image teacher: 16×16×1 pixels, patch 2 (64 tokens).
    TINY_PIXART, num_attention_heads=4, attention_head_dim=16, cross_attention_dim=64,
    num_layers=4, caption_channels=32)


def digits_t2i_teacher() -> ml_collections.ConfigDict:
  """EDM training (ε-parameterised PixArt through the DDPM adapter) of the tiny digits
  text-to-image teacher (configs/teachers/digits_t2i.py): prompts of the committed cache paired
  with the digits by class, 10 % prompt dropout to the cached "" for classifier-free guidance;
  evaluated with DPM-Solver++(2M) at 35 NFE, guided (w = 2) and unguided."""
  cfg = t2i()
  cfg.teacher.pixart_config = ml_collections.ConfigDict(dict(DIGITS_T2I_PIXART))
  cfg.teacher.prompt_cache = asset("digits_t2i_prompts")
  cfg.method.name, cfg.method.cond_drop = "edm_training", 0.1
  # The sampler starts at the adapter's σ_max = 157 and ε-prediction multiplies errors by σ, so
  # train on ln σ ~ N(0, 2²) (σ up to ~150) with λ(σ) ≈ 1/σ² (ε-MSE as PixArt/DDPM, times
  # 1 + σ²/σ_data²): EDM's λ with σ_data = 100. EDM's N(−1.2, 1.2²) and σ_data = 0.5 gave
  # noise at 35 NFE (no σ > 10 seen, and 1 + 4σ² weights).
  cfg.method.p_mean, cfg.method.p_std = 0.0, 2.0
  cfg.diffusion.sigma_data = 100.0
  cfg.disc.enabled = False
  # Cosine decay to 0 over 12,000 steps: at 3,200 constant-lr steps the cross-attention (the
  # prompt's only path) was still being learnt (held-out accuracy 0.71 against 0.91 here).
  cfg.optim.generator.update(dict(lr=1e-3, weight_decay=0.0, schedule="cosine"))
  cfg.train.update(dict(steps=12000, batch_size=64, ema_decays=(0.999,), log_every=100,
                        ckpt_every=1000, eval_every=0))
  cfg.eval.update(dict(sampler="dpm_solver_pp_2m", nfe=35, params="raw", teacher_nfes=(),
                       guidance_scale=2.0, num_samples=500, grid_size=20))
  return cfg


# The digits teacher with its own text encoder (configs/teachers/digits_t2i_text.py): T5 width =
# the transformer's caption_channels; buckets/distance cover the 64-byte prompts.
DIGITS_T2I_TEXT_PIXART = dict(DIGITS_T2I_PIXART, caption_channels=64)
DIGITS_T5 = dict(d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2,
                 feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                 relative_attention_max_distance=64, checkpoint="")


def digits_t2i_text_teacher() -> ml_collections.ConfigDict:
  """digits_t2i_teacher with a byte-level T5 trained with it (experiments/t2i_text.py; the
  warm start, pretrained T5 and lr scale are configs/teachers/digits_t2i_text.py's): conditions are byte ids of the digit phrasings (data/digit_phrasings.py, every
  training phrasing of a digit's class), evaluation on the training and held-out phrasings of
  assets/digits_prompts_v2.json; the transformer reads the 64-d T5 states."""
  cfg = digits_t2i_teacher()
  cfg.teacher.pixart_config = ml_collections.ConfigDict(dict(DIGITS_T2I_TEXT_PIXART))
  cfg.teacher.update(dict(prompt_cache="", prompts=asset("digits_prompts_v2.json"),
                          train_prompts="digit_phrasings", max_length=64,
                          text_encoder=ml_collections.ConfigDict(dict(DIGITS_T5))))
  cfg.eval.num_samples = 560  # 2 samples for each of the 280 prompts.
  # 3,000 steps from the warm start of configs/teachers/digits_t2i_text.py (pretrained T5, the
  # class-prompt teacher's transformer); from random weights the text is learnt far slower.
  cfg.train.update(dict(steps=3000, ckpt_every=500))
  return cfg


# Guidance of the digits text-to-image students and of the teacher they are scored against: the
# FID-oriented references' range (SiD-LSG's best FID at κ 1.5, f-distill COCO 1.75). At w = 2
# every method kept held-out accuracy ≥ 0.98 but recall ≤ 0.5 (BENCHMARKS.md, issue 25).
DIGITS_T2I_GUIDANCE = 1.5
# The guidance the flow students train with (configs/digits_t2i_flow_*; they are scored, as the
# PixArt students, against the flow teacher's 35-step sampler at DIGITS_T2I_GUIDANCE). Matching
# the guided score overshoots that sampler at the same w: trained at 1.5 for 2,400 iterations,
# the JS student's pixel std is 0.652–0.657 against the sampler's 0.642–0.646 (unguided
# 0.632–0.637) and its FD 11.1–12.0 against 8.7–8.9; trained at 1.3 for 1,200 it is no sharper
# than the sampler (std 0.641–0.644; FD 6.0, recall 0.70–0.75, held-out 0.958–0.966; seeds 0
# and 1). Against the sampler at its own w = 1.3 (FD 5.07, recall 0.79, held-out 0.965, seed 0)
# it is at 1.2× the FD and 0.09 below the recall. BENCHMARKS.md, "Digits text-to-image students
# of a rectified-flow teacher".
DIGITS_T2I_FLOW_GUIDANCE = 1.3
# The guidance the 4-step PixArt digits student trains with (configs/digits_t2i_js_4step.py,
# scored at DIGITS_T2I_GUIDANCE). A 4-step chain overshoots the sampler more than one step does:
# trained at 1.5 its held-out accuracy is 0.993 and recall 0.46-0.58 (the sampler's: 0.948,
# 0.87); at 1.2 for 1,200 iterations, 0.972-0.975 and 0.70-0.76 (seeds 0-2). BENCHMARKS.md,
# "Few-step students and guidance as an input".
DIGITS_T2I_4STEP_GUIDANCE = 1.2


def digits_t2i_distill() -> ml_collections.ConfigDict:
  """One-step distillation of the committed digits text-to-image teacher with its own text
  encoder (configs/digits_t2i_*):
  the student and fake score start from the teacher; evaluation reports the student and the
  teacher at 1/2/4/35 NFE with (w = eval.guidance_scale) and without guidance."""
  cfg = t2i()
  # The teacher that reads what people type (configs/teachers/digits_t2i_text.py): its byte-level
  # T5 is frozen here, as PixArt's is, and the prompts of assets/digits_prompts_v2.json come
  # through the cache it wrote (encode_prompts --model=assets/digits_t2i_text_encoder).
  cfg.teacher.pixart_config = ml_collections.ConfigDict(dict(DIGITS_T2I_TEXT_PIXART))
  cfg.teacher.checkpoint = asset("digits_t2i_text_teacher")
  cfg.teacher.prompt_cache = asset("digits_t2i_text_prompts")
  cfg.teacher.max_length = 64  # Bytes + </s> (the exported tokenizer's model_max_length).
  cfg.disc.feature_keys = ("block3",)
  cfg.method.critic_steps = 1
  for net in ("generator", "fake_score", "discriminator"):
    cfg.optim[net].lr = 2e-4
  # ema_rampup 0.5: the 0.99-EMA's half-life is at most half the updates so far, so the
  # evaluated EMA holds none of the teacher-copy initial weights (issue 25 §1).
  cfg.train.update(dict(steps=600, batch_size=32, ema_decays=(0.99,), ema_rampup=0.5,
                        log_every=50, ckpt_every=200))
  cfg.eval.update(dict(num_samples=560, sampler="one_step", params="0.99", nfe=35,
                       teacher_nfes=(1, 2, 4, 35), guidance_scale=DIGITS_T2I_GUIDANCE,
                       grid_size=20,
                       metric="digits",  # also for data-free runs (dataset.name='prompts').
                       per_prompt_samples=50))  # 560 = 2 samples for each of the 280 prompts.
  return eps_teacher(cfg)


# ------------------------------------------------------------------ rectified-flow DiT teachers
def flow_teacher(cfg: ml_collections.ConfigDict, shift: float = 1.0) -> ml_collections.ConfigDict:
  """A text-to-image config made for a rectified-flow DiT teacher (teacher.kind 'flow_dit',
  teachers/flow_dit.py), in place: the transformer predicts a velocity (out_channels =
  in_channels), the schedule is diffusers' FlowMatch one (T = 1000, `shift`), the reference
  sampler is Euler on its own grid."""
  cfg.teacher.kind = "flow_dit"
  cfg.teacher.pixart_config.out_channels = cfg.teacher.pixart_config.in_channels
  cfg.teacher.schedule = ml_collections.ConfigDict(dict(num_train_timesteps=1000, shift=shift))
  cfg.eval.teacher_solver = "euler"
  if cfg.eval.sampler != "one_step":
    cfg.eval.sampler = "euler"
  return cfg


def flow_distill(cfg: ml_collections.ConfigDict, sigma_init: float = 80.0
                 ) -> ml_collections.ConfigDict:
  """Noise levels and fake-score loss for distilling a rectified-flow teacher, in place, for any
  method: its x̂0 = x_s − s·v̂ carries at most its velocity error (s < 1), unlike an ε-teacher's
  σ·ε error, so the student starts near pure noise (σ_init 80: s = 0.988, as EDM's one-step
  students; diffusers' flow samplers start at s = 1) and t = T·s is drawn uniformly over
  [t(σ_min), t(σ_max)] ('uniform_t': uniform s, the rectified-flow draw of flow DMD/SiD
  recipes) for the generator, the fake score and f-distill's ratio bins; the fake score is
  trained on the velocity MSE ('velocity', λ = 1/s²), the teacher's own loss."""
  d, m = cfg.diffusion, cfg.method
  d.sigma_init = d.sigma_max = sigma_init
  m.sigma_law, m.dsm_weighting = "uniform_t", "velocity"
  if "fake_sigma_law" in m:
    m.fake_sigma_law = "generator"
  if "ratio_bin_space" in m:
    m.ratio_bin_space = "law"
  return cfg


def t2i_flow() -> ml_collections.ConfigDict:
  """t2i() with the tiny transformer as a rectified-flow teacher (random weights unless
  teacher.checkpoint is set: tests and speed runs)."""
  return flow_distill(flow_teacher(t2i()))


def digits_t2i_flow_teacher() -> ml_collections.ConfigDict:
  """Flow-matching training of the digits text-to-image flow teacher
  (configs/teachers/digits_t2i_flow.py): the digits text teacher's transformer (its ε head cut to
  a velocity head, tools/flow_from_eps) reading the committed prompt cache of its frozen T5,
  images paired with training phrasings by class, 10 % prompt dropout to "" for guidance.
  Loss: the velocity MSE (edm_training with loss_weighting 'velocity') with ln σ ~ N(0, 1.6²),
  SD3's logit-normal time draw widened (std 1.6 instead of 1) so that the one-step students'
  σ_init = 80 (s = 0.988) is trained too; evaluated with Euler at 35 NFE, w = 2."""
  cfg = flow_teacher(digits_t2i_teacher())
  cfg.teacher.pixart_config = ml_collections.ConfigDict(
      dict(DIGITS_T2I_TEXT_PIXART, out_channels=1))
  cfg.teacher.prompt_cache = asset("digits_t2i_text_prompts")
  cfg.teacher.max_length = 64
  cfg.method.p_mean, cfg.method.p_std, cfg.method.loss_weighting = 0.0, 1.6, "velocity"
  cfg.diffusion.sigma_data = 0.5  # Unused by the velocity weighting.
  cfg.train.update(dict(steps=3000, ckpt_every=500))
  cfg.eval.update(dict(num_samples=560, sampler="euler", teacher_solver="euler"))
  return cfg


# The digits text-to-image recipes, each for either teacher family (configs/digits_t2i_{js,dmd2,
# sid_lsg}.py and configs/digits_t2i_flow_*.py): cfg is digits_t2i_distill() or
# digits_t2i_flow_distill(); noise_levels re-applies its family's σ laws to a new method block;
# w is the teacher guidance in the loss (DIGITS_T2I_GUIDANCE, or DIGITS_T2I_FLOW_GUIDANCE for the
# flow teacher). Every student is scored against the teacher sampled at eval.guidance_scale.
def digits_t2i_js(cfg: ml_collections.ConfigDict, w: float = DIGITS_T2I_GUIDANCE
                  ) -> ml_collections.ConfigDict:
  """f-distill JS with teacher guidance w in the loss, FastGen's 1:4 schedule."""
  cfg.method.divergence = "js"
  cfg.method.guidance_scale = w
  cfg.method.critic_steps = 4
  return cfg


def digits_t2i_dmd2(cfg: ml_collections.ConfigDict, w: float = DIGITS_T2I_GUIDANCE
                    ) -> ml_collections.ConfigDict:
  """DMD2: reverse KL, no ratio normalisation, GAN head on the fake score's block 1, 1:4,
  teacher guidance w in the loss."""
  cfg.method.update(dict(divergence="rkl", ratio_normalization=False, disc_features="fake_score",
                         gan_weight_disc=1e-2, critic_steps=4, guidance_scale=w))
  # The head reads the fake score's block 1 of 4 (mid-network, as DMD2's UNet bottleneck and
  # pixart512_dmd2's block 13 of 28): its GAN gradient then trains the fake score's first half,
  # not nearly all of it as block 3 did (issue 25, review item 9).
  cfg.disc.feature_keys = ("block1",)
  return cfg


def digits_t2i_sid_lsg(cfg: ml_collections.ConfigDict, noise_levels=eps_teacher,
                       w: float = DIGITS_T2I_GUIDANCE) -> ml_collections.ConfigDict:
  """SiD-LSG (κ1 = κ2 = κ4 = w), α = 1, condition dropout 0.1, SiD's Adam, data-free."""
  from fdistill_jax.methods import sid  # pylint: disable=import-outside-toplevel
  cfg.method = sid.method_config(alpha=1.0, kappa_train_fake=w, kappa_fake=w, kappa_real=w,
                                 cond_drop=0.1, critic_steps=4)
  sid_style(cfg)
  cfg.dataset.name = "prompts"
  return noise_levels(cfg)


def digits_t2i_flow_distill() -> ml_collections.ConfigDict:
  """digits_t2i_distill with the committed digits flow teacher (assets/digits_t2i_flow_teacher,
  configs/teachers/digits_t2i_flow.py) and flow_distill's noise levels: the same prompts, data,
  student size and evaluation as the PixArt digits students (configs/digits_t2i_*), twice their
  budget."""
  cfg = digits_t2i_distill()
  flow_teacher(cfg)
  cfg.teacher.checkpoint = asset("digits_t2i_flow_teacher")
  cfg.diffusion.sigma_min = 0.002
  # Twice the PixArt students' 600 iterations: at 600 the JS student's raw weights meet the
  # targets but its evaluated EMA's recall is still 0.56–0.57; at 1,200 both meet them.
  cfg.train.steps = 1200
  return flow_distill(cfg)
