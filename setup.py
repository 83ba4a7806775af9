"""fdistill_jax: one-step diffusion distillation (f-distill and peers) in JAX/Flax.

Version pins: the core stack is pinned to the versions measured together on CPU (measured
together on CPU, 2026-11): jax 0.10.2 / flax 0.12.8 / orbax 0.12.8 /
clu 0.0.12 resolve with numpy 2.x and protobuf 7 with a clean `pip check`.
* clu's metric writers and `tfds.load` import TensorFlow at module level, so `tensorflow-cpu` and
  `tensorboard` are core dependencies (about 1.4 GB, ~30 s of install) rather than an option: the
  trainer logs through clu.
* torch must be pinned exactly (`==2.13.0`): any range resolves to a multi-GB CUDA wheel. torch,
  diffusers and transformers are used only as references in tests and for weight interop.
"""
from setuptools import find_packages, setup

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax>=0.2.5",
    "orbax-checkpoint==0.12.8",
    "ml_collections>=1.0",
    "clu==0.0.12",
    "tensorflow-cpu>=2.20",  # clu.metric_writers and tfds.load import TF.
    "tensorboard>=2.20",
    "tensorflow-datasets==4.9.10",
    "grain>=0.2.10",
    "safetensors>=0.4",
    "numpy>=1.26",
    "scipy>=1.11",  # sqrtm for FID, exact-teacher metrics.
    "scikit-learn>=1.3",  # ships the handwritten digits used by the offline quickstart.
    "pillow>=10",
    "matplotlib>=3.7",  # scatter plots of toy runs.
    "absl-py>=2",
    "tqdm>=4.60",  # the console progress bar (engine/progress.py).
]

EXTRAS = {
    # PyTorch interop (reading EDM .pkl/.pt, export) and reference implementations in tests.
    "torch": ["torch==2.13.0", "diffusers==0.42.1", "transformers==5.23.0"],
    "dev": ["pytest>=8", "pytest-xdist>=3"],
    # gs:// workdirs: orbax asks the GCS API about the bucket when it deletes old steps.
    "gcs": ["google-cloud-storage>=2"],
}
EXTRAS["all"] = sorted({p for v in EXTRAS.values() for p in v})

setup(
    name="fdistill_jax",
    version="0.1.0",
    description="One-step diffusion distillation by f-divergence distribution matching, in JAX/Flax.",
    packages=find_packages(include=["fdistill_jax", "fdistill_jax.*"]),
    package_data={"fdistill_jax": ["assets/*", "assets/*/*", "assets/*/*/*"]},
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require=EXTRAS,
)
