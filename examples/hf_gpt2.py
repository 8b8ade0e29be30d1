"""A Hugging Face ``GPT2LMHeadModel`` built from a small config, trained on stdlib source bytes.

The model comes from ``transformers.GPT2Config`` alone: random init, no downloaded weights
and no tokenizer, since every byte is its own token. The text is the top-level ``*.py``
files of the running interpreter's standard library, read in name order and cut at
``TEXT_BYTES``, as in ``tiny_gpt.py``, so nothing is downloaded. The blocks to checkpoint
are the ``GPT2Block`` modules in ``model.transformer.h``. The baseline is the cautious setup
of many GPT recipes: AdamW at 3e-4 with small batches.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from autotune.data import ByteWindows, stdlib_bytes
from autotune.task import Task

BLOCK_SIZE = 64  # bytes of context; short enough that a step is matmul-bound, not attention-bound
D_MODEL = 256  # wide enough for bf16 matmuls to pay off on a CPU with bf16 instructions
N_LAYER = 4  # four GPT2Blocks: a real stack to checkpoint, still fast on two cores
N_HEAD = 4  # 64-dim heads, GPT-2's head size
VOCAB = 256  # one token per byte: no tokenizer to download
TEXT_BYTES = 1_500_000  # ~23k training windows: many steps before an epoch ends


def build_model() -> nn.Module:
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=BLOCK_SIZE,
        n_embd=D_MODEL,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        # No dropout: the same config gives the same loss curve, so trials compare fairly.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,  # bytes have no special tokens; GPT-2's 50256 is outside VOCAB
        eos_token_id=None,
        use_cache=False,  # training only; a KV cache would be dead weight in every forward
        # Eager attention, not SDPA: on CPU, bf16 autocast sped eager steps up ~1.9x but SDPA
        # steps far less (its bf16 backward for 64-wide heads is slow), hiding what bf16 buys.
        attn_implementation="eager",
    )
    return GPT2LMHeadModel(config)


def build_dataset() -> ByteWindows:
    return ByteWindows(stdlib_bytes(TEXT_BYTES), BLOCK_SIZE)


def loss_fn(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
    x, y = batch
    logits = model(input_ids=x).logits
    # float() keeps the softmax in fp32 when the model runs in bf16; the targets are already
    # shifted by the dataset, so this is plain cross entropy, not labels= (which shifts again).
    return nn.functional.cross_entropy(logits.float().view(-1, VOCAB), y.view(-1))


task = Task(
    model=build_model,
    dataset=build_dataset,
    loss=loss_fn,
    optimizer="adamw",
    baseline=dict(batch_size=16, lr=3e-4),  # the cautious GPT recipe: small batch, AdamW at 3e-4
    blocks=["transformer.h.*"],  # the GPT2Blocks (a * stays within one dotted segment)
    name="hf_gpt2",
)
