"""The ``preroll serve`` YAML file: backends, router settings, history store.

Example (see ``examples/serve.yaml``)::

    store: preroll-history.sqlite        # relative paths are relative to this file
    router: {encoder: minilm+lexical+stats, head: auto, rule: utility, lam: 1.0, refit_every: 50}
    backends:
      - name: small
        base_url: http://127.0.0.1:9001/v1
        model: mixtral-8x7b              # the upstream's own model name
        api_key_env: SMALL_API_KEY       # read from the environment, never from the file
        cost_per_call: 0.0006
        history: [histories/small.jsonl]

Every mistake is reported as a :class:`ConfigError` naming the file, the line
and the field (``backends[1].cost_per_call``), because a server that refuses
to start with "validation error" sends its operator guessing.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal, Mapping

from preroll._optional import require
yaml = require("yaml", extra="serve", what="a serve config")
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from preroll.errors import ConfigError  # the one ConfigError, re-exported: a serve config's mistakes are it
from preroll.validation import from_pydantic
from preroll.route.specs import RouterOptions

#: ``model`` values in a chat request that mean "let the router choose".
ROUTE_ALIASES = ("auto", "preroll")

#: What a backend name may be: it travels in response headers (``x-preroll-model``, ``x-preroll-fallback``),
#: where a newline or control character makes the reply unsendable and a comma or ';' makes it ambiguous.
BACKEND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")


class BackendConfig(BaseModel):
    """One OpenAI-compatible upstream and what a call to it costs."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name clients use to pin this backend, and the history's key.")
    base_url: str = Field(description="OpenAI-compatible API root, e.g. http://127.0.0.1:9001/v1.")
    model: str | None = Field(default=None, description="Upstream model name; defaults to `name`.")
    api_key_env: str | None = Field(default=None, description="Environment variable holding the API key.")
    cost_per_call: float | None = Field(default=None, ge=0)
    cost_per_1k_tokens: float | None = Field(default=None, ge=0)
    output_tokens: int = Field(default=0, ge=0, description="Expected completion tokens (token pricing only).")
    timeout_s: float = Field(default=60.0, gt=0, description="Upstream timeout before falling back.")
    history: list[Path] = Field(default_factory=list, description="Record files imported once into the store.")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name is empty")
        if not BACKEND_NAME.fullmatch(v):
            raise ValueError(f"{v!r} is not a usable backend name: use 1-128 letters, digits and . _ : / @ + - "
                             "(starting with a letter or digit); it is sent in HTTP headers")
        if v in ROUTE_ALIASES:
            raise ValueError(f"{v!r} is reserved (it asks the router to choose)")
        return v

    @field_validator("base_url")
    @classmethod
    def _url_ok(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {v!r})")
        return v.rstrip("/")

    @field_validator("cost_per_call", "cost_per_1k_tokens")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("history", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, (str, Path)) else v

    @model_validator(mode="after")
    def _one_cost(self) -> "BackendConfig":
        if (self.cost_per_call is None) == (self.cost_per_1k_tokens is None):
            raise ValueError("give exactly one of 'cost_per_call' or 'cost_per_1k_tokens'")
        return self

    @property
    def upstream_model(self) -> str:
        return self.model or self.name


class RouterSettings(RouterOptions):
    """The ``router:`` block: :class:`~preroll.route.specs.RouterOptions` plus what only the server needs."""

    refit_every: int = Field(default=50, ge=1, description="Refit after this many new feedback outcomes. With "
                                                           "explore on, the exploration settings' schedule "
                                                           "(explore.refit, explore.first_refit) decides instead.")
    max_batch: int = Field(default=8, ge=1, description="Most concurrent prompts routed in one router call.")
    threads: int | None = Field(
        default=1, ge=1, description="Torch threads of the server's encoder; null: torch's default. One thread "
                                     "keeps the routing worker from competing with the event loop for the cores.")
    cache_dir: Literal[False] | Path | None = Field(
        default=None, description="Embedding cache directory; null: $PREROLL_CACHE or ~/.cache/preroll; "
                                  "false: none. Every routed prompt's embedding is written there.")


#: Host names a loopback-only server answers to (the ``server.allowed_hosts`` default).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServerSettings(BaseModel):
    """Who may talk to the proxy: a bearer token, allowed Host names, allowed browser origins."""

    model_config = ConfigDict(extra="forbid")

    auth_token_env: str | None = Field(
        default=None, description="Environment variable holding the bearer token every endpoint but "
                                  "/health requires; null: no token (the server then binds loopback only).")
    allowed_hosts: list[str] = Field(
        default_factory=lambda: list(LOOPBACK_HOSTS), min_length=1,
        description="Host header names accepted (port ignored); '*' accepts any. Stops DNS rebinding.")
    allowed_origins: list[str] = Field(
        default_factory=list, description="Browser origins (scheme://host[:port]) allowed to call the API; "
                                          "a request with any other Origin header gets 403.")

    @field_validator("auth_token_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(c.isspace() for c in v)):
            raise ValueError(f"must be an environment variable NAME (got {v!r}); the token itself "
                             "never goes in this file")
        return v

    @field_validator("allowed_hosts", "allowed_origins")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [h.strip().lower().rstrip("/") for h in v]


class LimitSettings(BaseModel):
    """Bounds on what one request can make the server read, compute and store."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024,
                                description="Largest request body; larger: 413 before it is read.")
    max_prompt_chars: int = Field(default=200_000, ge=1, description="Longest prompt accepted (413 beyond).")
    route_prefix_chars: int = Field(
        default=4000, ge=16, description="Routing reads, and the store keeps, this many leading characters "
                                         "of a prompt, so a huge prompt costs the router no more than a "
                                         "normal one.")
    max_json_depth: int = Field(default=32, ge=4, description="Deepest nesting of a JSON request body.")
    max_attempts: float = Field(default=100, gt=0, allow_inf_nan=False,
                                description="Most attempts one feedback row may claim (422 beyond).")
    max_outcomes: int = Field(default=1000, ge=1, description="Most rows in one feedback request.")
    max_upstream_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024,
        description="Largest answer relayed from a backend; larger: 502 (a stream ends with an error event). "
                    "Bounds what one upstream can make the proxy hold in memory.")


class BreakerSettings(BaseModel):
    """Per-backend circuit breaker: stop paying for a dead backend on every request."""

    model_config = ConfigDict(extra="forbid")

    failures: int = Field(default=5, ge=1, description="Consecutive failures that open the circuit.")
    cooldown_s: float = Field(default=30.0, gt=0, allow_inf_nan=False,
                              description="Seconds an open circuit skips the backend before one probe.")


class ServeConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")

    backends: list[BackendConfig] = Field(min_length=1)
    router: RouterSettings = Field(default_factory=RouterSettings)
    store: Path = Field(description="SQLite file holding every model's history.")
    check_backends: bool = Field(default=True, description="Refuse to start if a backend does not answer.")
    check_timeout_s: float = Field(default=3.0, gt=0)
    server: ServerSettings = Field(default_factory=ServerSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)

    @field_validator("backends")
    @classmethod
    def _unique_names(cls, v: list[BackendConfig]) -> list[BackendConfig]:
        seen: set[str] = set()
        for b in v:
            if b.name in seen:
                raise ValueError(f"backend name {b.name!r} appears twice")
            seen.add(b.name)
        return v

    def backend(self, name: str) -> BackendConfig:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    @property
    def backend_names(self) -> list[str]:
        return [b.name for b in self.backends]

    def api_keys(self, environ: Mapping[str, str] | None = None, *, source: str | Path | None = None) -> dict[str, str | None]:
        """Each backend's API key from the environment; a named but unset variable is an error."""
        environ = os.environ if environ is None else environ
        keys: dict[str, str | None] = {}
        for i, b in enumerate(self.backends):
            if b.api_key_env is None:
                keys[b.name] = None
            elif not environ.get(b.api_key_env):
                raise ConfigError(f"environment variable {b.api_key_env} is not set (backend {b.name!r})",
                                  path=source, field=f"backends[{i}].api_key_env")
            else:
                keys[b.name] = environ[b.api_key_env]
        return keys


    def auth_token(self, environ: Mapping[str, str] | None = None, *,
                   source: str | Path | None = None) -> str | None:
        """The bearer token from ``server.auth_token_env`` (``None`` when no variable is named).

        A named variable that is unset, or holds a token too short to resist
        guessing, is an error: a server that silently runs open is worse than
        one that does not start.
        """
        name = self.server.auth_token_env
        if name is None:
            return None
        environ = os.environ if environ is None else environ
        token = environ.get(name)
        if not token:
            raise ConfigError(f"environment variable {name} (the bearer token) is not set",
                              path=source, field="server.auth_token_env")
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"the token in {name} has {len(token)} characters; use at least "
                              f"{MIN_TOKEN_CHARS} (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)",
                              path=source, field="server.auth_token_env")
        return token


#: Shortest bearer token accepted.
MIN_TOKEN_CHARS = 16


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None,
                check_api_keys: bool = True) -> ServeConfig:
    """Read, validate and resolve a serve YAML file.

    Relative paths (``store``, ``history``) are taken relative to the file, so
    a config works from whatever directory the server is started in. API-key
    variables are checked here (unless ``check_api_keys=False``, for tools
    that only need the store), so a missing one stops start-up at once.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", path=path) from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"malformed YAML: {getattr(exc, 'problem', None) or exc}", path=path,
                          line=None if mark is None else mark.line + 1) from None
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}", path=path)
    try:
        config = ServeConfig.model_validate(data)
    except ValidationError as exc:
        loc = tuple(exc.errors()[0].get("loc", ()))
        raise from_pydantic(exc, ConfigError, path=path, line=_line_of(root, loc), format_loc=_dotted) from None
    base = path.resolve().parent
    config = config.model_copy(update={
        "store": _under(base, config.store),
        "router": config.router.model_copy(update={
            "cache_dir": _under(base, config.router.cache_dir) if isinstance(config.router.cache_dir, Path)
            else config.router.cache_dir}),
        "backends": [b.model_copy(update={"history": [_under(base, h) for h in b.history]})
                     for b in config.backends],
    })
    for i, b in enumerate(config.backends):
        for j, h in enumerate(b.history):
            if not h.is_file():
                raise ConfigError(f"history file not found: {h}", path=path,
                                  line=_line_of(root, ("backends", i, "history", j)),
                                  field=f"backends[{i}].history[{j}]")
    if check_api_keys:
        config.api_keys(environ, source=path)
        config.auth_token(environ, source=path)
    return config


def _under(base: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else base / p


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: Any, loc: tuple) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == part:
                    # An unknown key is reported at the key itself.
                    child = v if isinstance(v, (yaml.MappingNode, yaml.SequenceNode)) else k
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line
