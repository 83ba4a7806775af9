"""Input data: random-access sources (sources.py: protocol, arrays, digits; image_folder.py: EDM
zip or image folder; tfds_reader.py: TFDS) and the sharded grain pipeline (pipeline.py)."""
from fdistill_jax.data.pipeline import DATASETS, InputPipeline, local_batch_size, make_source
from fdistill_jax.data.image_folder import ImageFolderSource
from fdistill_jax.data.sources import ArraySource, DigitsSource, ImageSource, load_digits_arrays
from fdistill_jax.data.tfds_reader import TfdsSource, tfds_source

__all__ = [
    "DATASETS", "ArraySource", "DigitsSource", "ImageFolderSource", "ImageSource",
    "InputPipeline", "TfdsSource", "load_digits_arrays", "local_batch_size", "make_source",
    "tfds_source",
]
