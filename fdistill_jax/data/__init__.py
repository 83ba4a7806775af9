"""Input data: random-access sources (sources.py) and the sharded grain pipeline (pipeline.py)."""
from fdistill_jax.data.pipeline import (DATASETS, DevicePrefetcher, InputPipeline, local_batch_size,
                                        make_source, to_global_array)
from fdistill_jax.data.sources import (ArraySource, DigitsSource, ImageFolderSource, ImageSource,
                                       TfdsSource, load_digits_arrays, tfds_source)

__all__ = [
    "DATASETS", "ArraySource", "DevicePrefetcher", "DigitsSource", "ImageFolderSource",
    "ImageSource", "InputPipeline", "TfdsSource", "load_digits_arrays", "local_batch_size",
    "make_source", "tfds_source", "to_global_array",
]
