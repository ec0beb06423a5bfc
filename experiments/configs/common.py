"""Every key a run config has, with its default. Config files start from `base()` and change values only.

The returned `ConfigDict` is locked: a key that is not here is an error, in a config file as on the command line
(`--config.train.epochs=64`). `bitune_jax.train.validate` then checks every value before the model loads.
"""

from ml_collections import ConfigDict

from bitune_jax.peft import ALL_PROJECTIONS


def base() -> ConfigDict:
    c = ConfigDict()
    c.workdir = "runs/default"
    c.seed = 0
    c.objective = "full"  # full | peft | bitune
    c.model = ConfigDict(
        dict(
            name="smollm2-135m-instruct",  # a preset with shipped weights, a local HF directory or a .gguf file
            dtype="float32",  # compute dtype: float32 | bfloat16
            param_dtype="float32",  # trainable (master) weights: float32, or bfloat16 to update bf16 params directly
            attn_impl="xla",  # xla | pallas | auto
            remat="none",  # none | dots | full
        )
    )
    c.peft = ConfigDict(dict(method="lora", rank=8, alpha=16.0, targets=ALL_PROJECTIONS, dropout=0.0))
    c.bitune = ConfigDict(
        dict(tau=0.01, w_init=0.01, mixing="per_layer", learn_alpha=True, bidirectional=True, shared_adapters=False)
    )
    c.data = ConfigDict(
        dict(
            source="synthetic",  # synthetic (the project's long-CoT task) | jsonl (train_path) | hf (data.hf)
            train_path="",  # JSONL (or .jsonl.gz) of chat `messages` or `{prompt, response}` rows
            chat_template="",  # a .jinja file replacing the tokenizer's template (e.g. an instruct one for a base)
            template="chat",  # chat (the model's template) | plain ("Question: ...\n\nAnswer:" as in Bitune)
            num_samples=0,  # nested-prefix subset of the pool (0: all)
            val_size=0,  # rows held out of the pool first (the same for every num_samples) for validation loss/accuracy
            pool_seed=42,
            pool_order="shuffle",  # shuffle (the pool once, by pool_seed) | file (rows as they stand: a prepared split)
            order="grain",  # each epoch's order: grain (a fresh shuffle by (seed, epoch)) | authors (their chain)
            max_len=512,
            truncation="drop",  # drop | truncate | error
            batch_size=1,  # sequences per update (global, over all processes)
            pad_multiple=16,  # batches pad to a multiple of this (bounds recompilation)
            bucket_chunks=0,  # >0: length bucketing within chunks of this many batches
            synthetic=ConfigDict(
                dict(task="arithmetic", pool_size=512, test_size=64, min_steps=4, max_steps=8, seed=0, cot=True)
            ),
            # source=hf: a save_to_disk directory, .parquet file or folder of shards; column names, optional row filter
            hf=ConfigDict(
                dict(
                    path="",
                    split="train",
                    messages="messages",
                    prompt="prompt",
                    response="response",
                    where_column="",
                    where_value="",
                )
            ),
        )
    )
    c.train = ConfigDict(
        dict(
            epochs=1,
            max_updates=0,
            lr=2e-5,
            schedule="cosine",
            warmup_frac=0.1,
            weight_decay=0.0,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            clip=1.0,
            accumulate=1,
            loss_chunk=0,
            on_nonfinite="stop",
            rollback_lr_factor=0.5,
            rollback_limit=3,
            moments_dtype="float32",
        )
    )
    # max_updates: the update budget (0: epochs x batches); the schedule spans the budget.
    # moments_dtype: AdamW's moments and update math (float32 even for bfloat16 params | bfloat16 to save memory).
    # on_nonfinite: a step whose loss or gradient norm is NaN/inf is never applied; then "stop" ends the run
    # (naming the batch and the last known good checkpoint), "skip_batch" goes on without it (counted per epoch),
    # or "rollback" restores the last known good checkpoint (checkpoint.spike_factor), skips that batch in the
    # replay and scales the learning rate by rollback_lr_factor, at most rollback_limit times.
    # loss_chunk: >0 scores the answer rows this many at a time (logits never exist for the whole sequence).
    c.saturation = ConfigDict(
        dict(
            enabled=True,
            threshold=0.99,
            window=3,
            delta=1e-3,
            min_epochs=1,
            mode="anneal",
            anneal_updates=0,
            metric="sample_token_accuracy",
        )
    )
    # mode: anneal (the LR falls to 0 over anneal_updates more updates, 0 = the warmup's length, then the run ends),
    # stop (end now), observe (log the saturation epoch, train on). metric: sample_token_accuracy (the mean of each
    # sample's own accuracy: the authors' logged train/token_acc, per-step accuracies of one sample averaged over 100
    # steps) or token_accuracy (over all answer tokens of the epoch, which weighs long samples more).
    # data.pool_order=file: validation is the first val_size rows and the training set the next num_samples, as
    # experiments/prepare_dolci.py writes the authors' split. data.order=authors: epoch e reorders the previous
    # epoch's order by numpy.random.default_rng(seed + e).permutation, as their `dataset.shuffle(seed=seed + epoch)`.
    # Held-out accuracy during training (bitune_jax.train.evaluation), logged per epoch beside token accuracy.
    c.eval = ConfigDict(
        dict(
            every_epochs=0,  # 0: off; k: after every k-th epoch and after the last one
            at_start=False,  # also before the first update (logged as epoch 0)
            source="synthetic",  # synthetic (the task's disjoint test set) | jsonl (path, rows in the training format)
            path="",
            num_items=32,  # the first N held-out items (0: all)
            n=1,
            temperature=0.0,
            top_p=1.0,
            seed=0,  # samples per item and sampling (temperature 0: greedy)
            max_new_tokens=256,
            batch_size=16,
            val_every_epochs=1,  # validation loss and token accuracy (data.val_size > 0): every k-th epoch and the last
            mmlu=ConfigDict(dict(test="", dev="", shots=5, num_items=0, batch_size=8)),
        )
    )
    # eval.mmlu: the repetition paper's forgetting eval (bitune_jax.eval.mmlu) on local JSONL in cais/mmlu's layout;
    # with `test` set it runs after the last epoch, and at the held-out eval's epochs (every_epochs, at_start).
    # data x fsdp split rows, sequence splits each row's tokens (long sequences, batches smaller than the mesh),
    # tensor splits heads and MLP columns; parameters are sharded over fsdp x sequence. The product is the device count.
    c.mesh = ConfigDict(dict(data=1, fsdp=1, sequence=1, tensor=1))
    c.checkpoint = ConfigDict(dict(every_steps=100, keep=2, async_save=True, spike_factor=3.0))
    # spike_factor: a save is "known good" when the largest step loss and gradient norm since the previous save
    # stay within this factor of the recent saves' medians; the newest known good save is kept beyond `keep`.
    # log.wandb: Weights & Biases beside TensorBoard; mode offline writes a local run under workdir/wandb
    # (`wandb sync` uploads it later), online needs a login; project must be set unless mode is disabled.
    c.log = ConfigDict(
        dict(every_steps=1, tensorboard=True, wandb=ConfigDict(dict(project="", entity="", mode="disabled")))
    )
    c.distributed = ConfigDict(dict(enabled=False, coordinator="", num_processes=1, process_id=0))
    # A resume must match the run it continues (bitune_jax.train.run_record); name the keys it may change,
    # comma-separated ("train.lr,data.batch_size"), and the change is recorded in workdir/run.json.
    c.resume = ConfigDict(dict(allow_changes=""))
    c.lock()  # a config file can change values but not add keys: `c.train.lrr = 1e-4` is an error
    return c
