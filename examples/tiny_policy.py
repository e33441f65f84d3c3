"""An offline, CPU-sized policy for trying ``PrerollGRPOTrainer`` with no model hub: a task family of graded
difficulty, a character tokenizer built locally and a tiny Llama built from a config.

Why here, beside the quickstart and outside the installed package: it is demo and test scaffolding, not
something a user trains. ``examples/trl_quickstart.py`` imports it as ``tiny_policy`` (its own folder is on
the path when run as a script); the tests and ``experiments/`` import it as ``examples.tiny_policy`` (the
repository root is on the path: pytest's ``pythonpath``, or ``python -m`` from the root).

Prompts are ``<op><digits>=`` with ``op`` in copy ``c``, reverse ``r`` and per-digit increment ``p`` (each
digit + 1 mod 10); the answer has as many digits as the prompt, so length (k) and op set the difficulty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPS = ("c", "r", "p")
DIGITS = "0123456789"
SPECIAL = ("<pad>", "<eos>")


def answer(op: str, digits: str) -> str:
    if op == "c":
        return digits
    if op == "r":
        return digits[::-1]
    if op == "p":
        return "".join(str((int(d) + 1) % 10) for d in digits)
    raise ValueError(f"unknown op {op!r}")


@dataclass(frozen=True)
class TaskItem:
    prompt: str
    answer: str
    op: str
    k: int


def sample_items(n: int, rng: np.random.Generator, k_range: tuple[int, int] = (1, 8),
                 exclude: frozenset[str] | set[str] = frozenset()) -> list[TaskItem]:
    """``n`` distinct task items, op and length uniform; prompts in ``exclude`` are never drawn."""
    out: dict[str, TaskItem] = {}
    available = len(OPS) * sum(10 ** k for k in range(k_range[0], k_range[1] + 1)) - len(exclude)
    if n > available:
        raise ValueError(f"{n} distinct items asked for, only {available} exist outside the excluded ones")
    while len(out) < n:
        op = OPS[rng.integers(len(OPS))]
        k = int(rng.integers(k_range[0], k_range[1] + 1))
        digits = "".join(DIGITS[j] for j in rng.integers(0, 10, size=k))
        prompt = f"{op}{digits}="
        if prompt not in exclude:
            out.setdefault(prompt, TaskItem(prompt, answer(op, digits), op, k))
    return list(out.values())


def char_tokenizer():
    """A character-level ``PreTrainedTokenizerFast`` built locally (left padding, as GRPO needs)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list(DIGITS) + list(OPS) + ["="]
    vocab = {tok: i for i, tok in enumerate(list(SPECIAL) + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   padding_side="left")
    return fast


def tiny_model(tokenizer, *, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0):
    """A randomly initialised tiny Llama sized for the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
