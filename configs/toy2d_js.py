"""f-distill (Jensen-Shannon) of an exact Gaussian mixture (default: 8 ring modes, unequal weights).

Command:
  python -m fdistill_jax.main --config=configs/toy2d_js.py --workdir=runs/toy2d_js
Benchmark (every toy problem, two seeds; `--problems=list` prints each problem's main.py flags):
  python -m fdistill_jax.benchmarks.toy --problems=ring8,mix8d,grid25,mix16d --divergences= \
      --configs=configs/toy2d_js.py --seeds=0,1
Recipe (issue 12; BENCHMARKS.md "Toy f-distill: what leaves mass between modes"), changes
from defaults.toy(): σ_init 1.0 instead of 80 (the one-step generator G(σ_init·z) starts from
the pretrained denoiser's structured map at σ = 1, not the near-constant one at σ = 80);
critic_steps 3 (three fake-score/discriminator steps per generator step: the fake score's lag
was the main cause of mass between modes found); 6,000 iterations (1,500 generator updates);
evaluation of the EMA-0.99 generator. Everything else as defaults.toy(): JS, generator lr 3e-4,
critic lr 1e-3, Adam β (0, 0.99), λ_G 1e-2, batch 512, MLP 128 × 3 generator and fake score.
Expected (EMA-0.99 generator vs the exact teacher's 35-NFE Heun sampler, seeds 0 / 1, about
4–5 minutes on one CPU core, benchmark σ_data = data std): ring8 (the default problem)
SW 0.084 / 0.071 (teacher 0.062 / 0.068), in-mode 0.942 / 0.941, mode TV 0.032 / 0.032,
8/8 modes; in-mode grid25 0.81, mix16d 0.89, mix8d 0.94; all problems in BENCHMARKS.md.
Other divergences: --config.method.divergence=kl|rkl|sf|sh|jf|neyman.
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
