"""A synthetic task family of graded difficulty, a character tokenizer and a tiny causal LM (no hub, CPU).

Why: a closed-loop GRPO benchmark needs a policy that actually learns within
minutes on a CPU, and prompts whose success rates spread over 0..1. Prompts
are ``<op><digits>=`` with ``op`` in copy ``c``, reverse ``r`` and
per-digit increment ``p`` (each digit + 1 mod 10); the answer has as many
digits as the prompt, so length (k) and op set the difficulty. A tiny Llama
briefly pre-trained on the family solves short strings and rarely long ones.
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


def pretrain_batches(steps: int, batch: int, seed: int, k_range: tuple[int, int],
                     exclude: frozenset[str] | set[str] = frozenset()):
    """The pre-training stream: ``steps`` batches of fresh task items, none of them in ``exclude``.

    Why the exclusion: held-out items must be unseen by the policy, or the
    held-out reward partly measures recall of pre-training (short items repeat:
    there are only 30 items of length 1, and 86 of the benchmark's 500 held-out
    items were in the stream before the exclusion).
    """
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield sample_items(batch, rng, k_range, exclude=exclude)


def pretrain(model, tokenizer, *, steps: int, batch: int = 64, lr: float = 3e-3, seed: int = 0,
             k_range: tuple[int, int] = (1, 8), exclude: frozenset[str] | set[str] = frozenset(),
             progress=None) -> list[float]:
    """Supervised warm-up on fresh task items outside ``exclude`` (loss on the answer and eos only); returns the
    loss curve."""
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    eos = tokenizer.eos_token
    for step, items in enumerate(pretrain_batches(steps, batch, seed, k_range, exclude)):
        texts = [it.prompt + it.answer + eos for it in items]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        for row, it in enumerate(items):
            pad = int((enc["attention_mask"][row] == 0).sum())
            labels[row, : pad + len(it.prompt)] = -100
        out = model(**enc, labels=labels)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss))
        if progress is not None:
            progress(step)
    model.eval()
    return losses


def exact_match_reward(completions, answer, **kwargs) -> list[float]:
    """GRPO reward: 1 when the completion (up to eos) is exactly the answer, else 0."""
    return [1.0 if c.split("<eos>")[0].strip() == a else 0.0 for c, a in zip(completions, answer)]


def greedy_accuracy(model, tokenizer, items: list[TaskItem], *, batch: int = 256) -> np.ndarray:
    """Per item 0/1: the greedy completion equals the answer."""
    import torch

    out = np.zeros(len(items))
    max_new = max(it.k for it in items) + 1
    model.eval()
    with torch.no_grad():
        for s in range(0, len(items), batch):
            chunk = items[s:s + batch]
            enc = tokenizer([it.prompt for it in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            gen = model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=False)
            for j, (it, t) in enumerate(zip(chunk, texts)):
                out[s + j] = float(t.split("<eos>")[0].replace("<pad>", "").strip() == it.answer)
    return out


def sampled_reward(model, tokenizer, items: list[TaskItem], *, samples: int = 4, seed: int = 0,
                   batch: int = 512) -> np.ndarray:
    """Per item: the mean exact-match reward of ``samples`` completions sampled at temperature 1.

    Why beside :func:`greedy_accuracy`: GRPO maximises the expected reward of
    *sampled* completions, and this is that objective on unseen prompts; the
    greedy answer can stay the same while the sampling distribution sharpens.
    Seeded, so two policies are scored on the same random stream.
    """
    import torch

    out = np.zeros(len(items))
    max_new = max(it.k for it in items) + 1
    model.eval()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            for s in range(0, len(items), batch):
                chunk = items[s:s + batch]
                enc = tokenizer([it.prompt for it in chunk], return_tensors="pt", padding=True,
                                add_special_tokens=False)
                gen = model.generate(**enc, max_new_tokens=max_new, do_sample=True, temperature=1.0, top_k=0,
                                     top_p=1.0, num_return_sequences=samples, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
                texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=False)
                for j, it in enumerate(chunk):
                    got = texts[j * samples:(j + 1) * samples]
                    out[s + j] = np.mean([t.split("<eos>")[0].replace("<pad>", "").strip() == it.answer
                                          for t in got])
    finally:
        torch.random.set_rng_state(state)
    return out
