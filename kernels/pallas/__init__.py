"""Pallas building blocks behind `kernels.flash_attention`: the XLA prologue (`schedule`), shared in-kernel math
(`tile_math`), and one module of kernels per lowering (`gpu_triton` for Triton and CPU interpret mode, `tpu_mosaic`
for Mosaic TPU)."""
