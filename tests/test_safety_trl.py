"""PrerollGRPOTrainer checks its inputs when it is built, not at the first step.

Once a ``None`` or integer prompt passed construction and killed training inside the tokenizer,
``PrerollTRLSettings(id_column="nope")`` was ignored silently, and ``book_file="../../x.npz"`` wrote
outside the checkpoint folder.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trl")
pytest.importorskip("torch")
from datasets import Dataset  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from examples.tiny_policy import char_tokenizer, sample_items, tiny_model  # noqa: E402
from preroll.integrations.trl import PrerollGRPOTrainer, PrerollTRLError, PrerollTRLSettings  # noqa: E402

G, B, N = 4, 3, 12


def _reward(completions, **kwargs):
    return [float(len(c) % 2) for c in completions]


def _trainer(tmp_path, prompts, preroll=None, **columns):
    tok = char_tokenizer()
    args = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", max_steps=1,
                      per_device_train_batch_size=B * G, num_generations=G, max_completion_length=4,
                      save_strategy="no", seed=0, disable_tqdm=True)
    ds = Dataset.from_dict({"prompt": prompts, **columns})
    return PrerollGRPOTrainer(model=tiny_model(tok, hidden=16), reward_funcs=_reward, args=args, train_dataset=ds,
                              processing_class=tok, preroll=preroll)


def _prompts():
    return [it.prompt for it in sample_items(N, np.random.default_rng(0))]


@pytest.mark.parametrize("bad, needle", [(None, "NoneType"), ("   ", "empty")])
def test_a_prompt_that_is_not_text_is_refused_naming_its_row(tmp_path, bad, needle):
    prompts = _prompts()
    prompts[5] = bad
    with pytest.raises(PrerollTRLError, match=rf"row 5, column 'prompt'.*{needle}"):
        _trainer(tmp_path, prompts)


def test_an_integer_prompt_column_is_refused(tmp_path):
    with pytest.raises(PrerollTRLError, match=r"row 0, column 'prompt'.*int"):
        _trainer(tmp_path, list(range(N)))


def test_chat_prompts_are_accepted_and_broken_messages_refused(tmp_path):
    chats = [[{"role": "user", "content": p}] for p in _prompts()]
    assert len(_trainer(tmp_path, chats).preroll_book.prompts) == N
    chats[3] = [{"role": "user"}]
    with pytest.raises(PrerollTRLError, match=r"row 3, column 'prompt': message 0"):
        _trainer(tmp_path, chats)


def test_a_named_id_column_must_exist(tmp_path):
    with pytest.raises(PrerollTRLError, match=r"id_column 'nope'"):
        _trainer(tmp_path, _prompts(), preroll=PrerollTRLSettings(id_column="nope"))
    # the default "id" may be absent: ids are then the prompts' hashes
    assert _trainer(tmp_path, _prompts()).preroll_book.prompts
    ids = [f"q{i}" for i in range(N)]
    tr = _trainer(tmp_path, _prompts(), preroll=PrerollTRLSettings(id_column="key"), key=ids)
    assert list(tr.preroll_book.ids) == ids


@pytest.mark.parametrize("name", ["../../x.npz", "/tmp/x.npz", "sub/x.npz", "..", "", "a\\..\\x.npz"])
def test_checkpoint_file_names_stay_inside_the_checkpoint_folder(name):
    with pytest.raises(ValidationError, match="plain file name"):
        PrerollTRLSettings(book_file=name)
    with pytest.raises(ValidationError, match="plain file name"):
        PrerollTRLSettings(pool_file=name)
    assert PrerollTRLSettings(book_file="my_book.npz").book_file == "my_book.npz"
