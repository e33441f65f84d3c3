"""The closed loop's task: pre-training on the task family of ``examples/tiny_policy.py``, its reward and the
held-out scores.

Why: a closed-loop GRPO benchmark needs a policy that actually learns within
minutes on a CPU, and prompts whose success rates spread over 0..1. A tiny
Llama briefly pre-trained on the family (``pretrain``) solves short strings
and rarely long ones.
"""

from __future__ import annotations

import numpy as np

from examples.tiny_policy import TaskItem, char_tokenizer, sample_items, tiny_model  # noqa: F401  (re-exported)


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
