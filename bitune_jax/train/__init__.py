"""Training: objectives, the jitted step, sharding, checkpoints, logs, saturation and the loop."""
