"""Weights in and out: Hugging Face safetensors directories and GGUF files."""
