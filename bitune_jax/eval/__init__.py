"""Evaluation: reasoning by sampling (last `\\boxed{}`, avg@n, pass@k), multiple choice by log-likelihood, and
MMLU next-letter scoring (the repetition paper's forgetting eval)."""

from bitune_jax.eval.answers import is_correct, is_correct_original, last_boxed, last_boxed_original
from bitune_jax.eval.bitune_mc import AUTHORS_MC, read_bitune_task, summarize_task
from bitune_jax.eval.datasets import MCItem, ReasoningItem, read_aime, read_chat, read_gpqa, read_mc
from bitune_jax.eval.metrics import avg_at_n, mean_pass_at_k_unbiased, pass_at_k_first, pass_at_k_unbiased
from bitune_jax.eval.mmlu import MMLUItem, evaluate_mmlu, read_mmlu
from bitune_jax.eval.model import TrainedModel
from bitune_jax.eval.multiple_choice import MCConfig, MCScore, score_choices
from bitune_jax.eval.reasoning import QuestionRecord, ReasoningEvalConfig, evaluate, write_generations_jsonl

__all__ = [
    "AUTHORS_MC",
    "MCConfig",
    "MCItem",
    "MCScore",
    "MMLUItem",
    "QuestionRecord",
    "ReasoningEvalConfig",
    "ReasoningItem",
    "TrainedModel",
    "avg_at_n",
    "evaluate",
    "evaluate_mmlu",
    "is_correct",
    "is_correct_original",
    "last_boxed",
    "last_boxed_original",
    "mean_pass_at_k_unbiased",
    "pass_at_k_first",
    "pass_at_k_unbiased",
    "read_aime",
    "read_bitune_task",
    "summarize_task",
    "read_chat",
    "read_gpqa",
    "read_mc",
    "read_mmlu",
    "score_choices",
    "write_generations_jsonl",
]
