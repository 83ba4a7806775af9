"""Uni-Instruct, forward KL, of EDM's ImageNet-64 ADM teacher: the released recipe.

defaults.uni_edm('imagenet64'): the official 'imagenet64-cond-sid' run of run_uni_instruct.sh
(a-little-hoof/Uni_Instruct 3cdf92e): batch 8192 (use train.grad_accum on small slices), lr 4e-6
for generator and fake score, Adam β = (0, 0.999) with ε 1e-6, bf16 compute with fp32 weights
(the code: fp16), σ_init 2.5, t_max 800, --lsg 100 --lsg_gan 0.01 --ls 1 --lsd 1, α = 1, no
augmentation, dropout 0.1, 300 Mimg (37k iterations), EMA half-life 2 Mimg (--ema 2); no
generator update before 100 kimg (13 steps), plain SiD before 200 kimg (25 steps). The ratio
is the code's (method.ratio 'official', ≈ 1 for 64×64×3 images: SiDA with α = 1 in effect).

Command (a GPU cluster or TPU pod; see launch/README.md):
  python -m fdistill_jax.main --config=configs/imagenet64_uni_fkl.py --workdir=gs://BUCKET/in64_uni \
    --config.teacher.checkpoint=PATH/edm-imagenet-64x64-cond-adm.pkl
Expected: the paper reports one-step FID 1.02 (forward KL, long schedule; SiD²A 1.110, f-distill
JS 1.11/1.16); not reproduced here. The code's gradient handling is on: non-finite gradient
entries replaced for generator and fake score (optim.<net>.nan_to_num) and the fake score's
gradient clipped elementwise to |g| ≤ 1 (optim.fake_score.clip_value 1.0; the GAN term is on).
The official run initialises its generator from SiD's released ImageNet-64 α = 1.2 generator
(--sid_model); to do the same add
    --config.student.init_checkpoint=PATH/<SiD generator .pkl>
(the fake score still starts from the teacher); without it the generator starts from the
teacher. The code's resumed state is not reproduced. Without a teacher checkpoint it runs on
random weights.
"""
from fdistill_jax import defaults


def get_config():
  return defaults.uni_edm("imagenet64", "fkl")
