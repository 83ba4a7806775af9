"""Uni-Instruct, forward KL, of EDM's class-conditional CIFAR-10 teacher: the released recipe.

defaults.uni_edm('cifar10'): the official 'cifar10-cond-sid' run of run_uni_instruct.sh
(a-little-hoof/Uni_Instruct 3cdf92e): batch 256, lr 1e-5 for generator and fake score, Adam
β = (0, 0.999), fp32, σ_init 2.5, t_max 800, --lsg 100 --lsg_gan 0.01 --ls 1 --lsd 1, α = 1,
fake-score/discriminator inputs augmented with p = 0.12, dropout 0.13, 300 Mimg, EMA half-life
0.5 Mimg; no generator update before 100 kimg, plain SiD before 200 kimg. The ratio is the
code's (method.ratio 'official'), which for 32×32×3 images is 1 within ~1e-4, so this trains
SiDA (α = 1) in effect; set method.ratio='logit' for the paper's discriminator ratio.

Command (a GPU cluster or TPU pod; see launch/README.md):
  python -m fdistill_jax.main --config=configs/cifar10_uni_fkl.py --workdir=gs://BUCKET/c10_uni \
    --config.teacher.checkpoint=PATH/edm-cifar10-32x32-cond-vp.pkl
Expected: the paper reports one-step FID 1.38 (conditional; 1.46 unconditional); not reproduced
here (it needs the EDM checkpoint and GPU weeks). The code's gradient handling is on:
non-finite gradient entries replaced for generator and fake score (optim.<net>.nan_to_num) and
the fake score's gradient clipped elementwise to |g| ≤ 1 (optim.fake_score.clip_value 1.0; the
GAN term is on). The official run starts its generator from a SiD (α = 1.2) checkpoint
(--sid_model); to do the same add
    --config.student.init_checkpoint=PATH/<SiD generator .pkl>
(the fake score still starts from the teacher). Without it the generator starts from the teacher
(as the code's own 'cifar10-uncond' recipe does). The code's resumed state is not reproduced.
Without a teacher checkpoint it runs on random weights.
"""
from fdistill_jax import defaults


def get_config():
  return defaults.uni_edm("cifar10", "fkl")
