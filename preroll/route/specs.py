"""What a router is told about its models, and what it answers.

Prices are always parameters: a model is priced per call or per 1k tokens,
exactly one of the two, because a router that mixes them up (or silently
defaults one to zero) makes every cost trade-off wrong.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from preroll.defaults import DEFAULT_ENCODER
from preroll.route.errors import RouteConfigError
from preroll.route.explore import ExploreSettings
from preroll.validation import from_pydantic

#: Characters per token in :func:`estimate_tokens`. English text runs at about
#: four characters per token for GPT-style BPE tokenizers; the estimate is only
#: used to price token-billed models when the caller gives no token counts.
CHARS_PER_TOKEN = 4.0

#: The routing rules, named once: the Literal validates configs, ``RULES`` lists them in messages,
#: and :mod:`preroll.route.rules` checks at import that it implements exactly these.
RuleName = Literal["utility", "confident", "threshold", "gain"]
RULES: tuple[str, ...] = get_args(RuleName)


def estimate_tokens(text: str) -> int:
    """Rough prompt length in tokens: ``ceil(len(text) / 4)``, at least 1.

    Cheap and dependency-free, so it costs nothing on the routing path. Pass
    exact counts (``n_tokens=``) when you have them.
    """
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


class ModelSpec(BaseModel):
    """One candidate model and its price.

    ``cost_per_call`` prices every call the same; ``cost_per_1k_tokens``
    prices by (prompt tokens + ``output_tokens``) / 1000. Give exactly one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    cost_per_call: float | None = None
    cost_per_1k_tokens: float | None = None
    output_tokens: int = Field(default=0, ge=0,
                               description="expected completion tokens, added to the prompt's for token pricing")

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("model name is empty")
        return v

    @field_validator("cost_per_call", "cost_per_1k_tokens")
    @classmethod
    def _cost_ok(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v < 0):
            raise ValueError(f"a cost must be a finite number >= 0 (got {v})")
        return v

    @model_validator(mode="after")
    def _exactly_one_cost(self) -> "ModelSpec":
        given = [n for n in ("cost_per_call", "cost_per_1k_tokens") if getattr(self, n) is not None]
        if len(given) != 1:
            what = "neither" if not given else "both"
            raise ValueError(f"model {self.name!r}: give exactly one of 'cost_per_call' or "
                             f"'cost_per_1k_tokens' (got {what})")
        return self

    @property
    def per_token(self) -> bool:
        return self.cost_per_1k_tokens is not None

    def cost(self, n_tokens: int | None = None) -> float:
        """Price of one call. Token-priced models need the prompt's token count."""
        if self.cost_per_call is not None:
            return float(self.cost_per_call)
        if n_tokens is None:
            raise ValueError(f"model {self.name!r} is priced per token: pass n_tokens "
                             "(or a prompt, whose tokens are estimated)")
        if n_tokens < 0:
            raise ValueError(f"n_tokens must be >= 0 (got {n_tokens})")
        return float(self.cost_per_1k_tokens) * (n_tokens + self.output_tokens) / 1000.0


class RouteDecision(BaseModel):
    """Where one prompt goes, and why.

    ``fallback`` lists the other eligible models, best first under the same
    rule, for a caller whose first choice fails or is rate-limited.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    p_success: dict[str, float]
    expected_cost: float
    fallback: list[str]
    rule: str
    param: float
    explored: bool = False  # chosen by exploration (differs from the greedy choice), see preroll.route.explore

    @property
    def ranking(self) -> list[str]:
        """The chosen model followed by the fallbacks."""
        return [self.model, *self.fallback]


class FrontierPoint(BaseModel):
    """One operating point of a rule: its parameter and what it buys."""

    model_config = ConfigDict(frozen=True)

    param: float
    cost: float          # mean cost per prompt
    quality: float       # mean success (labels) of the chosen models
    share: dict[str, float]  # fraction of prompts sent to each model
    strong_share: float  # fraction sent to the most expensive model (mean cost)


class RouterOptions(BaseModel):
    """A router's parameters other than its models, checked once for every file that configures one.

    Why one class: the CLI/library config (:class:`RouterConfig`) and the
    server's ``router:`` block (:class:`preroll.serve.config.RouterSettings`)
    both configure a :class:`~preroll.route.Router`; two copies of these fields
    drifted apart once (one refused ``lam: .inf``, the other accepted it).
    """

    model_config = ConfigDict(extra="forbid")

    encoder: str = DEFAULT_ENCODER
    head: str = "auto"
    rule: RuleName = "utility"
    lam: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    threshold: float = Field(default=0.8, allow_inf_nan=False)
    confidence: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    margin: float = Field(default=0.0, allow_inf_nan=False)
    guard: bool | dict[str, Any] = Field(
        default=True, description="The out-of-depth guard (preroll.route.depth.DepthGuard): true (its defaults), "
                                  "false (off), or a mapping of its fields (far_quantile, z, margin, sample).")
    explore: bool | ExploreSettings = Field(
        default=False, description="Live routing from bandit feedback: true (Thompson sampling, default "
                                   "settings), false, or settings (preroll.route.explore.ExploreSettings).")

    @field_validator("guard", mode="before")
    @classmethod
    def _guard_settings(cls, v: Any) -> Any:
        # Checked here by the same reading the Router gives it (switch_or_settings), so a config file's
        # mistake is refused at load, naming the field, not at the first fit.
        from preroll.route.depth import DepthGuard
        from preroll.validation import switch_or_settings

        if isinstance(v, DepthGuard):
            return asdict(v)
        if not isinstance(v, (bool, dict)):
            raise ValueError(f"expected true, false or a mapping of DepthGuard's fields, got {type(v).__name__}")
        if isinstance(v, dict):
            try:
                switch_or_settings(v, DepthGuard, field="guard", error_cls=RouteConfigError)
            except RouteConfigError as exc:
                raise ValueError(str(exc).removeprefix("field 'guard': ")) from None
        return v

    @field_validator("explore", mode="before")
    @classmethod
    def _explore_settings(cls, v: Any) -> Any:
        # Validated here so an error names the setting (not the union's 'bool' branch).
        if isinstance(v, dict):
            try:
                return ExploreSettings.model_validate(v)
            except ValidationError as exc:
                first = exc.errors()[0]
                raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        return v

    def router_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~preroll.route.Router` these options set."""
        return {name: getattr(self, name) for name in RouterOptions.model_fields}


class RouterConfig(RouterOptions):
    """A router's settings as a service or CLI reads them from YAML/JSON: its models plus :class:`RouterOptions`."""

    models: list[ModelSpec]

    @field_validator("models")
    @classmethod
    def _unique_names(cls, v: list[ModelSpec]) -> list[ModelSpec]:
        if not v:
            raise ValueError("needs at least one model")
        names = [m.name for m in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate model names: {', '.join(dup)}")
        return v

    @classmethod
    def load(cls, source: str | Path | dict[str, Any]) -> "RouterConfig":
        """Validate a dict or a ``.yaml``/``.yml``/``.json`` file; errors name the file and field."""
        path = None
        if isinstance(source, (str, Path)):
            path = str(source)
            data = _read_config_file(Path(source))
        else:
            data = source
        if not isinstance(data, dict):
            raise RouteConfigError(f"expected a mapping at the top level, got {type(data).__name__}", path=path)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise from_pydantic(exc, RouteConfigError, path=path) from None


def _read_config_file(path: Path) -> Any:
    import json

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RouteConfigError("file not found", path=str(path)) from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise RouteConfigError(f"malformed JSON at line {exc.lineno}: {exc.msg}", path=str(path)) from None
    if path.suffix.lower() in (".yaml", ".yml"):
        from preroll._optional import require

        yaml = require("yaml", what="a YAML router config (or write it as .json)")
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise RouteConfigError(f"malformed YAML{where}: {getattr(exc, 'problem', exc)}", path=str(path)) from None
    raise RouteConfigError(f"unsupported config type {path.suffix!r} (use .yaml, .yml or .json)", path=str(path))
