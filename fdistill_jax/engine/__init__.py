"""The training engine: state pytrees, jit-compiled steps, sharding, checkpoints, metrics, loop."""
