"""The single-step warm-up before the list-edits repetition study, on SmolLM2-135M-Instruct (2 CPU cores).

    python -m experiments.list_edits_warmup [--train_items 1800] [--eval_items 200] [--out runs/list_edits_warmup]

The study needs a model that already does >= 90% of single list edits right (`experiments/list_edits_pilot.py`:
the shipped 4-bit model does 1% zero-shot), so the long traces shape the procedure instead of teaching the step.
This config fine-tunes on `list_edits.single_step_items` rows (one edit on one list, the zero-shot chat prompt, the
bracketed list after the edit as the answer) that `experiments/list_edits_warmup.py` writes as JSONL and points
`data.train_path` and `workdir` at (the values here are that script's defaults).

Why these settings:
  * full fine-tune, AdamW, cosine with 10% warmup, clip 1.0 (the repetition recipe, `smollm2_rep.py`): the skill is
    copying a short list with one word added, dropped or moved, which touches attention everywhere, not a
    low-rank add-on; full FT of 135M parameters fits in ~5.5 GB peak RSS here. Full FT was tried first and it
    passes the gate, so LoRA was not tried.
  * lr 1e-4 (the study's own lr), measured against 3e-5, 1800 items (225 updates) each, scored on the same 200
    held-out items (seed 0, the pilot's), untrained 0.010:
      - lr 3e-5: 0.945 overall, but reverse 0.825 (queue/reverse 0.75): copy errors on long lists (a word
        doubled or two neighbours swapped); training token accuracy had flattened at ~0.988 while the rate decayed;
      - lr 1e-4: 0.995 overall, every op >= 0.975 (one remove on a 7-word list wrong), in the same time
        (19-22 minutes of training on the shared 2 cores).
    Forgetting outside the task (MMLU) was not measured at either rate.
  * batch 8, one epoch over many distinct items (thousands of single steps are cheap, ~90 tokens each), so the
    model cannot memorize items, only the procedure.
  * saturation in observe mode: a one-epoch run has nothing to stop, but its epoch token accuracy is logged.
  * no held-out generation inside training and no MMLU: the script scores held-out single steps itself, before and
    after, on items drawn with another seed.
  * max_len 128, pad_multiple 32: single-step examples are 62..110 tokens (prompt 55..90 with SmolLM2's default
    system prompt, answer 7..20), so batches compile to few shapes and never pad past 128.
"""

from experiments.configs.common import base


def get_config():
    c = base()
    c.workdir = "runs/list_edits_warmup/run"
    c.objective = "full"
    c.data.source = "jsonl"
    c.data.train_path = "runs/list_edits_warmup/train.jsonl"
    c.data.template = "chat"
    c.data.num_samples = 0  # every row of the file
    c.data.max_len = 128
    c.data.truncation = "drop"
    c.data.pad_multiple = 32
    c.data.batch_size = 8
    c.train.epochs = 1
    c.train.lr = 1e-4
    c.train.schedule = "cosine"
    c.train.warmup_frac = 0.1
    c.train.clip = 1.0
    c.saturation.mode = "observe"
    c.saturation.metric = "token_accuracy"  # as recorded: the default before it became sample_token_accuracy
    c.eval.every_epochs = 0
    c.checkpoint.every_steps = 0  # only the final state: the script reads it back for the after-training score
    c.log.every_steps = 5
    return c
