"""Training and evaluation data: records from JSONL, tokenization with a truncation policy, and deterministic,
resumable, shardable batches on grain. The generic pipeline only: the studies' synthetic tasks are `bitune_jax.tasks`,
which imports this package, never the other way."""

from bitune_jax.data.batch import PackedBatch, PromptBatch, SFTBatch
from bitune_jax.data.pipeline import (
    DUMMY_ID,
    BatchIterator,
    EpochBatches,
    authors_epoch_order,
    collate,
    derive_seed,
    nested_sizes,
    nested_subset,
    shuffled_order,
    split_pool,
)
from bitune_jax.data.records import DataError, Record, read_jsonl, read_records, record_from_row, write_jsonl
from bitune_jax.data.tokenize import TokenizedExample, TruncationReport, encode_record, tokenize_records

__all__ = [
    "DUMMY_ID",
    "BatchIterator",
    "DataError",
    "EpochBatches",
    "PromptBatch",
    "Record",
    "PackedBatch",
    "SFTBatch",
    "TokenizedExample",
    "TruncationReport",
    "collate",
    "derive_seed",
    "encode_record",
    "nested_sizes",
    "authors_epoch_order",
    "nested_subset",
    "read_jsonl",
    "read_records",
    "record_from_row",
    "shuffled_order",
    "split_pool",
    "tokenize_records",
    "write_jsonl",
]
