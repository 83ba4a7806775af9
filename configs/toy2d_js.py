"""f-distill (Jensen-Shannon) of an exact Gaussian mixture (default: 8 modes on a ring, unequal weights).

Command:
  python -m fdistill_jax.main --config=configs/toy2d_js.py --workdir=runs/toy2d_js
Benchmark (every toy problem, two seeds; `--problems=list` prints each problem's main.py flags):
  python -m fdistill_jax.benchmarks.toy --problems=ring8,mix8d,grid25,mix16d --divergences= \
      --configs=configs/toy2d_js.py --seeds=0,1
Recipe (issue 12; BENCHMARKS.md "Toy f-distill: what leaves mass between modes"), changes from
defaults.toy(): σ_init 1.0 instead of 80 (the one-step generator G(σ_init·z) starts from the
pretrained denoiser's structured map at σ = 1 instead of the near-constant one at σ = 80),
critic_steps 3 (three fake-score/discriminator steps per generator step: the fake score's error
is what keeps mass between modes), 6,000 iterations (1,500 generator updates), evaluation of the
EMA-0.99 generator. Everything else as defaults.toy(): JS, generator lr 3e-4, critic lr 1e-3,
Adam β = (0, 0.99), λ_G 1e-2, batch 512, MLP 128 × 3 for generator and fake score.
Expected (EMA 0.99; teacher = exact denoiser, Heun 35 NFE; all problems in BENCHMARKS.md): grid25 seed 0:
SW 0.072 (teacher 0.079), in-mode 0.813 (teacher 0.997), mode TV 0.094, 25/25 modes, 314 s on
one shared CPU core. Other divergences: --config.method.divergence=kl|rkl|sf|sh|jf|neyman.
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.toy()
  cfg.method.divergence = "js"
  cfg.diffusion.sigma_init = 1.0
  cfg.method.critic_steps = 3
  cfg.train.steps = 6000
  cfg.eval.params = "0.99"
  return cfg
