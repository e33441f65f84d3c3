"""``python -m experiments.online``: samplers inside a long, drifting GRPO run, at equal rollouts.

Each step the trainer's data loader offers a pool of ``pool_factor * batch``
prompts (an epoch = every prompt offered once); a sampler rolls out ``batch``
of them with ``group_size`` rollouts each (DAPO instead rolls out pool
prompts in order until ``batch`` informative groups are kept, and pays for
every group it generated). True success rates drift as fitted on the shared
DAPO-Math histories (:mod:`experiments.online_world`). Reported: informative
groups per rollout generated, per epoch and after the first, relative to
uniform; the book's next-step prediction quality; and the book's overhead.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from experiments.online_world import World, build_world, fit_world, load_rates
from preroll.outputs import atomic_write_text, save_figure

SAMPLERS = ("uniform", "dapo", "memory", "book-no-neighbours", "book", "oracle")
#: Warm-started books and screening (docs/online.md, "A first epoch that pays"); not in the default run.
WARM_SAMPLERS = ("book-earlier", "book-other", "book-probe", "screen", "book-screen", "book-other-screen")
#: Measured on the shared DAPO-Math data: observed 10-rollout rates of the two policies on the prompts both were
#: scored on at the same step (steps 16, 64, 256: r 0.64, 0.51, 0.48 on 52, 49, 45 prompts), pooled.
CROSS_POLICY_R = 0.54
#: The earlier-step history: real training steps before the run's first step (16 -> 64 in the data).
EARLIER_STEPS = 48


@dataclass
class OnlineBenchConfig:
    variants: int = 4            # synthetic prompts per real DAPO text (2,722 texts -> 10,888 prompts)
    share: float = 0.5           # latent variance a variant shares with its anchor text (assumption)
    batch: int = 256
    pool_factor: int = 4
    group_size: int = 8
    epochs: int = 8
    seeds: tuple[int, ...] = (0,)
    samplers: tuple[str, ...] = SAMPLERS
    max_anchors: int | None = None   # quick mode: fewer real texts
    memory_keep: float = 0.5         # memory-only baseline: keep chance of a dead prompt per dead group in a row
    quick: bool = False
    book_settings: dict = field(default_factory=dict)   # OnlineSettings fields for the book samplers
    warm_coverage: float = 1.0       # share of prompts the earlier-step / other-policy history covers
    warm_rollouts: int = 10          # rollouts per prompt in that history (as in the DAPO data)
    probe: int = 256                 # book-probe: prompts rolled out (groups of group_size) before step 0, paid
    screen: int = 2                  # screening samplers: rollouts per screened prompt (kept as part of its group)

    def validate(self) -> None:
        bad = [s for s in self.samplers if s not in SAMPLERS + WARM_SAMPLERS]
        if bad:
            raise ValueError(f"unknown sampler(s) {', '.join(bad)}; choose from {', '.join(SAMPLERS)}")
        if "uniform" not in self.samplers:
            raise ValueError("the 'uniform' sampler is the reference and must be included")
        if not 0 <= self.share <= 1:
            raise ValueError(f"share must be in [0, 1] (got {self.share})")
        for name in ("variants", "batch", "pool_factor", "group_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass
class Trajectory:
    """Drifting true rates of every prompt, advanced one trainer step at a time (same path for every sampler)."""

    world: World
    steps: int
    seed: int

    def __post_init__(self) -> None:
        f = self.world.fit
        first, last = f.measured["first_step"], f.measured["last_step"]
        self.dt = (last - first) / max(self.steps, 1)   # real training steps per simulated step
        rng = np.random.default_rng(self.seed + 7)
        n = len(self.world.theta0)
        incr = rng.standard_normal((self.steps, n)) * (f.sigma_per_sqrt_step * np.sqrt(self.dt))
        self.theta = self.world.theta0[None, :] + np.cumsum(incr, axis=0) + f.shift_per_step * self.dt * np.arange(
            self.steps)[:, None]

    def rates(self, t: int) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.theta[t]))


def _informative(k: np.ndarray, g: int) -> np.ndarray:
    return (k > 0) & (k < g)


class _Sampler:
    def choose(self, pool: np.ndarray, t: int) -> np.ndarray: ...
    def observe(self, t: int, idx: np.ndarray, k: np.ndarray, g: int) -> None: ...


class Uniform(_Sampler):
    def __init__(self, rng):
        self.rng = rng

    def choose(self, pool, t, n):
        return self.rng.permutation(pool)[:n]

    def observe(self, t, idx, k, g):
        pass


class Oracle(_Sampler):
    def __init__(self, traj: Trajectory, g: int):
        self.traj, self.g = traj, g

    def choose(self, pool, t, n):
        p = self.traj.rates(t)[pool]
        u = 1 - p ** self.g - (1 - p) ** self.g
        return pool[np.argsort(-u, kind="stable")[:n]]

    def observe(self, t, idx, k, g):
        pass


class MemoryOnly(_Sampler):
    """GRESO-like: a prompt whose last ``d`` groups were dead is kept in the pool with chance keep**d."""

    def __init__(self, n_prompts: int, rng, keep: float):
        self.streak = np.zeros(n_prompts, np.int64)
        self.rng, self.keep = rng, keep

    def choose(self, pool, t, n):
        keep = self.rng.random(len(pool)) < self.keep ** self.streak[pool]
        order = self.rng.permutation(len(pool))
        ranked = order[np.argsort(~keep[order], kind="stable")]   # kept ones first, random within
        return pool[ranked[:n]]

    def observe(self, t, idx, k, g):
        dead = ~_informative(k, g)
        self.streak[idx] = np.where(dead, self.streak[idx] + 1, 0)


class BookSampler(_Sampler):
    def __init__(self, world: World, seed: int, g: int, pool_factor: int, neighbours: bool, extra: dict,
                 warm=None):
        from preroll.online import OnlineSettings, PromptBook

        settings = OnlineSettings(**{**extra, "group_size": g, "pool_factor": pool_factor, "seed": seed},
                                  **({} if neighbours else {"encoder": "none"}))
        self.book = PromptBook(world.texts, ids=list(range(len(world.texts))), settings=settings,
                               embeddings=world.embeddings if neighbours else None).prepare()
        if warm is not None:
            self.book.warm_start(warm)
        self.offset = 0      # book steps recorded before the run (a probe)
        self.seconds = 0.0   # per-step cost only: the one-off graph is built above

    def choose(self, pool, t, n):
        t0 = time.perf_counter()
        out = self.book.select(pool, n).indices
        self.seconds += time.perf_counter() - t0
        return out

    def observe(self, t, idx, k, g):
        t0 = time.perf_counter()
        rewards = [np.r_[np.ones(int(ki)), np.zeros(g - int(ki))] for ki in k]
        self.book.record(t + self.offset, idx, rewards)
        self.seconds += time.perf_counter() - t0


class Screening(_Sampler):
    """SPEED-RL-like screening (arXiv 2506.09016): roll out ``screen`` rollouts of candidates, in the book's order
    of expected informativeness (or at random without a book), complete the group (``g`` rollouts, the screening
    ones kept) of those whose screen was mixed, until ``B`` groups; the screens of the others are paid and
    recorded. If the pool runs out, the best-ranked screened-out prompts are completed to fill the batch."""

    def __init__(self, rng, screen: int, book: BookSampler | None = None):
        self.rng, self.screen, self.book = rng, screen, book
        self.seconds = 0.0

    @property
    def b(self):
        return self.book.book if self.book else None

    def run_step(self, pool, t, B, g, p_true, outcome_rng):
        """Returns (informative groups, rollouts generated) of the step, and records what it saw."""
        from preroll.online.policy import expected_informative

        if self.b is not None:
            t0 = time.perf_counter()
            order = pool[np.argsort(-expected_informative(self.b.predict(pool), g), kind="stable")]
            self.seconds += time.perf_counter() - t0
        else:
            order = self.rng.permutation(pool)
        s = self.screen
        kept, dropped, dropped_k = [], [], []
        screened = 0
        pos = 0
        while len(kept) < B and pos < len(order):
            take = order[pos:pos + 2 * (B - len(kept))]
            pos += len(take)
            ks = outcome_rng.binomial(s, p_true[take])
            screened += len(take)
            mixed = (ks > 0) & (ks < s)
            for i, km, m in zip(take, ks, mixed):
                if m and len(kept) < B:
                    kept.append((i, km))
                elif not m:
                    dropped.append(i)
                    dropped_k.append(km)
                else:   # mixed but the batch is full: its screen is paid, kept as an observation only
                    dropped.append(i)
                    dropped_k.append(km)
        fill = []
        for i, km in zip(dropped, dropped_k):
            if len(kept) + len(fill) >= B:
                break
            fill.append((i, km))
        fill_set = {i for i, _ in fill}
        groups = kept + fill
        idx = np.array([i for i, _ in groups], np.int64)
        k = np.array([km for _, km in groups]) + outcome_rng.binomial(g - s, p_true[idx])
        rollouts = s * screened + (g - s) * len(groups)
        if self.b is not None:
            t0 = time.perf_counter()
            rest = [(i, km) for i, km in zip(dropped, dropped_k) if i not in fill_set]
            rec_idx = np.r_[idx, np.array([i for i, _ in rest], np.int64)]
            rewards = ([np.r_[np.ones(int(ki)), np.zeros(g - int(ki))] for ki in k]
                       + [np.r_[np.ones(int(ki)), np.zeros(s - int(ki))] for _, ki in rest])
            self.b.record(t + self.book.offset, rec_idx, list(rewards))
            self.seconds += time.perf_counter() - t0
        return int(_informative(k, g).sum()), rollouts


def other_policy_rho(fit, target: float = CROSS_POLICY_R, seed: int = 0) -> float:
    """Latent logit correlation of two policies whose observed 10-rollout rates correlate at ``target``."""
    rng = np.random.default_rng(seed)
    z, e = rng.standard_normal(40_000), rng.standard_normal(40_000)

    def corr(rho):
        a = fit.mu + fit.tau * z
        b = fit.mu + fit.tau * (rho * z + np.sqrt(1 - rho ** 2) * e)
        ka = np.random.default_rng(seed + 1).binomial(10, 1 / (1 + np.exp(-a)))
        kb = np.random.default_rng(seed + 2).binomial(10, 1 / (1 + np.exp(-b)))
        return float(np.corrcoef(ka, kb)[0, 1])

    grid = np.linspace(0.0, 1.0, 41)
    return float(grid[int(np.argmin([abs(corr(r) - target) for r in grid]))])


def warm_evidence(kind: str, world: World, cfg: "OnlineBenchConfig", seed: int):
    """Outcomes from before the run, drawn in the simulated world (what ``PromptBook.warm_start`` receives).

    ``"earlier"``: the same policy ``EARLIER_STEPS`` real training steps before the run's first step, moved back
    along the fitted global drift and per-prompt random walk (the 16 -> 64 gap of the data, same-prompt r
    0.82-0.90). ``"other"``: another policy, 1 logit weaker overall, whose latent difficulty correlates with
    this one's so that their observed 10-rollout rates correlate as measured (``CROSS_POLICY_R``).
    Each covers a ``cfg.warm_coverage`` share of the prompts with ``cfg.warm_rollouts`` rollouts.
    """
    from preroll.online import WarmEvidence

    rng = np.random.default_rng(seed + (500 if kind == "earlier" else 600))
    f = world.fit
    n = len(world.theta0)
    if kind == "earlier":
        theta = (world.theta0 - f.shift_per_step * EARLIER_STEPS
                 + f.sigma_per_sqrt_step * np.sqrt(EARLIER_STEPS) * rng.standard_normal(n))
    else:
        rho = other_policy_rho(f)
        z = (world.theta0 - f.mu) / f.tau
        theta = f.mu - 1.0 + f.tau * (rho * z + np.sqrt(1 - rho ** 2) * rng.standard_normal(n))
    k = rng.binomial(cfg.warm_rollouts, 1 / (1 + np.exp(-theta)))
    cover = np.flatnonzero(rng.random(n) < cfg.warm_coverage)
    return WarmEvidence(ids=[str(i) for i in cover], successes=k[cover].astype(float),
                        attempts=np.full(len(cover), float(cfg.warm_rollouts)), source=[kind] * len(cover))


def _pools(n_prompts: int, pool_size: int, steps: int, rng) -> list[np.ndarray]:
    """The data loader's candidate pools: each epoch a fresh permutation cut into pools (the remainder dropped)."""
    out: list[np.ndarray] = []
    per_epoch = max(1, n_prompts // pool_size)
    while len(out) < steps:
        order = rng.permutation(n_prompts)
        out.extend(order[i * pool_size:(i + 1) * pool_size] for i in range(per_epoch))
    return out[:steps]


@dataclass
class PredictionLog:
    """The book's next-step beliefs on every pool prompt, against a held-out simulated group of each."""

    alpha: list = field(default_factory=list)
    beta: list = field(default_factory=list)
    k: list = field(default_factory=list)
    seen: list = field(default_factory=list)
    epoch: list = field(default_factory=list)

    def add(self, belief, k, seen, epoch):
        self.alpha.append(belief.alpha)
        self.beta.append(belief.beta)
        self.k.append(k)
        self.seen.append(seen)
        self.epoch.append(np.full(len(k), epoch))

    def metrics(self, g: int, mask_fn=None) -> dict:
        from scipy.stats import betabinom
        from sklearn.metrics import roc_auc_score

        from preroll.beliefs import BetaPrediction
        from preroll.online.policy import expected_informative

        a, b, k = (np.concatenate(x) for x in (self.alpha, self.beta, self.k))
        seen, epoch = np.concatenate(self.seen), np.concatenate(self.epoch)
        m = np.ones(len(a), bool) if mask_fn is None else mask_fn(seen, epoch)
        a, b, k = a[m], b[m], k[m]
        if len(a) == 0:
            return {}
        p = a / (a + b)
        y = np.r_[np.ones(len(p)), np.zeros(len(p))]
        w = np.r_[k, g - k]
        auc = roc_auc_score(y, np.r_[p, p], sample_weight=w) if 0 < k.sum() < g * len(k) else float("nan")
        brier = float(((k * (1 - p) ** 2 + (g - k) * p ** 2) / g).mean())
        bins = np.minimum((p * 10).astype(int), 9)
        ece = sum(abs((k[bins == j] / g).mean() - p[bins == j].mean()) * (bins == j).mean() for j in range(10)
                  if (bins == j).any())
        pinf = expected_informative(BetaPrediction(a, b), g)
        inf = ((k > 0) & (k < g)).astype(float)
        ibins = np.minimum((pinf * 10).astype(int), 9)
        ece_inf = sum(abs(inf[ibins == j].mean() - pinf[ibins == j].mean()) * (ibins == j).mean() for j in range(10)
                      if (ibins == j).any())
        ll = float(-betabinom.logpmf(k.astype(int), g, a, b).mean())
        # The same means with a point belief (no spread) would say: how much the spread buys.
        return {"n": int(len(a)), "auc": float(auc), "brier": brier, "ece": float(ece),
                "informative_ece": float(ece_inf), "informative_predicted": float(pinf.mean()),
                "informative_observed": float(inf.mean()), "betabinom_logloss": ll}


def run_world(cfg: OnlineBenchConfig, world: World, seed: int, progress: Callable[[int, int], None] | None = None):
    n_prompts = len(world.theta0)
    g, B = cfg.group_size, cfg.batch
    pool_size = min(cfg.pool_factor * B, n_prompts)
    steps_per_epoch = max(1, n_prompts // pool_size)
    steps = steps_per_epoch * cfg.epochs
    traj = Trajectory(world, steps, seed)
    pools = _pools(n_prompts, pool_size, steps, np.random.default_rng(seed + 1))
    outcome_rng = {s: np.random.default_rng(seed + 100 + i) for i, s in enumerate(cfg.samplers)}
    samplers: dict[str, _Sampler] = {}
    for i, name in enumerate(cfg.samplers):
        rng = np.random.default_rng(seed + 200 + i)
        if name == "uniform":
            samplers[name] = Uniform(rng)
        elif name == "oracle":
            samplers[name] = Oracle(traj, g)
        elif name == "memory":
            samplers[name] = MemoryOnly(n_prompts, rng, cfg.memory_keep)
        elif name in ("book", "book-no-neighbours"):
            samplers[name] = BookSampler(world, seed, g, cfg.pool_factor, neighbours=name == "book",
                                          extra=cfg.book_settings)
        elif name in ("book-earlier", "book-other", "book-probe", "book-screen", "book-other-screen"):
            kind = "earlier" if name == "book-earlier" else "other" if name.startswith("book-other") else None
            warm = warm_evidence(kind, world, cfg, seed) if kind else None
            book = BookSampler(world, seed, g, cfg.pool_factor, neighbours=True, extra=cfg.book_settings, warm=warm)
            samplers[name] = Screening(rng, cfg.screen, book) if name.endswith("screen") else book
        elif name == "screen":
            samplers[name] = Screening(rng, cfg.screen)
    informative = {s: np.zeros(steps) for s in cfg.samplers}
    rollouts = {s: np.zeros(steps) for s in cfg.samplers}
    dapo_order = np.random.default_rng(seed + 2).permutation(n_prompts)
    dapo_pos = 0
    logs = {s: PredictionLog() for s in samplers if isinstance(samplers[s], BookSampler)}
    eval_rng = np.random.default_rng(seed + 3)
    if "book-probe" in samplers:
        # The probe: cfg.probe random prompts rolled out with the base policy (step 0 of the book), paid for in
        # the first step's rollouts; its groups are not counted as the run's informative groups.
        probe = np.random.default_rng(seed + 5).choice(n_prompts, min(cfg.probe, n_prompts), replace=False)
        sampler = samplers["book-probe"]
        sampler.observe(0, probe, outcome_rng["book-probe"].binomial(g, traj.rates(0)[probe]), g)
        sampler.offset = 1
        rollouts["book-probe"][0] += g * len(probe)
    for t in range(steps):
        p_true = traj.rates(t)
        pool = pools[t]
        held_out = eval_rng.binomial(g, p_true[pool])
        for name, sampler in samplers.items():
            if name in logs:
                book = sampler.book
                logs[name].add(book.predict(pool), held_out, book.last_[pool] >= 0, t // steps_per_epoch)
            if isinstance(sampler, Screening):
                inf, ro = sampler.run_step(pool, t, B, g, p_true, outcome_rng[name])
                informative[name][t] += inf
                rollouts[name][t] += ro
                continue
            idx = sampler.choose(pool, t, B)
            k = outcome_rng[name].binomial(g, p_true[idx])
            sampler.observe(t, idx, k, g)
            informative[name][t] += _informative(k, g).sum()
            rollouts[name][t] += g * len(idx)
        if "dapo" in cfg.samplers:
            kept = generated = 0
            while kept < B and generated < 50 * B:
                if dapo_pos == n_prompts:
                    dapo_order, dapo_pos = np.random.default_rng(seed + 4 + t).permutation(n_prompts), 0
                take = dapo_order[dapo_pos:dapo_pos + (B - kept)]
                dapo_pos += len(take)
                k = outcome_rng["dapo"].binomial(g, p_true[take])
                generated += len(take)
                kept += int(_informative(k, g).sum())
            informative["dapo"][t] = min(kept, B)
            rollouts["dapo"][t] = g * generated
        if progress:
            progress(t + 1, steps)
    epoch = np.arange(steps) // steps_per_epoch
    return {"informative": informative, "rollouts": rollouts, "epoch": epoch, "steps_per_epoch": steps_per_epoch,
            "logs": logs, "book_seconds": {n: s.seconds / steps for n, s in samplers.items() if hasattr(s, "seconds")},
            "book_stats": {n: asdict(s.book.stats()) for n, s in samplers.items() if isinstance(s, BookSampler)},
            "n_prompts": n_prompts, "pool_size": pool_size, "steps": steps}


def simulate(cfg: OnlineBenchConfig, *, progress=None, log=print) -> dict:
    cfg.validate()
    table, texts = load_rates()
    fit = fit_world(table)
    log(f"fitted world: mu {fit.mu:.2f}, tau {fit.tau:.2f}, global drift {fit.shift_per_step:.4f} logit/step, "
        f"per-prompt drift sd {fit.sigma_per_sqrt_step:.3f}/sqrt(step)")
    runs = []
    for seed in cfg.seeds:
        world = build_world(fit, table, texts, variants=cfg.variants, share=cfg.share, seed=seed,
                            max_anchors=cfg.max_anchors)
        runs.append(run_world(cfg, world, seed, progress))
    return summarise(cfg, fit, runs)


def summarise(cfg: OnlineBenchConfig, fit, runs: list[dict]) -> dict:
    epochs = cfg.epochs
    rows = []
    per_epoch = {s: np.zeros(epochs) for s in cfg.samplers}
    for s in cfg.samplers:
        inf = sum(r["informative"][s] for r in runs)
        ro = sum(r["rollouts"][s] for r in runs)
        ep = runs[0]["epoch"]
        for e in range(epochs):
            per_epoch[s][e] = inf[ep == e].sum() / ro[ep == e].sum()
        after = ep >= 1
        rows.append({"sampler": s, "informative_per_1k_rollouts": 1000 * inf.sum() / ro.sum(),
                     "after_epoch1_per_1k": 1000 * inf[after].sum() / ro[after].sum(),
                     "epoch1_per_1k": 1000 * inf[ep == 0].sum() / ro[ep == 0].sum(),
                     "rollouts_per_step": float(ro.sum() / len(runs) / len(ep)),
                     "zero_signal_share": 1 - inf.sum() / (ro.sum() / cfg.group_size)})
    uni = {r["sampler"]: r for r in rows}["uniform"]
    for r in rows:
        r["x_uniform_after_epoch1"] = r["after_epoch1_per_1k"] / uni["after_epoch1_per_1k"]
        r["x_uniform_all"] = r["informative_per_1k_rollouts"] / uni["informative_per_1k_rollouts"]
        r["x_uniform_epoch1"] = r["epoch1_per_1k"] / uni["epoch1_per_1k"]
    g = cfg.group_size
    prediction = {}
    for name in runs[0]["logs"]:
        merged = runs[0]["logs"][name]
        for r in runs[1:]:
            for f in ("alpha", "beta", "k", "seen", "epoch"):
                getattr(merged, f).extend(getattr(r["logs"][name], f))
        prediction[name] = {
            "after_epoch1_all": merged.metrics(g, lambda seen, ep: ep >= 1),
            "after_epoch1_seen": merged.metrics(g, lambda seen, ep: (ep >= 1) & seen),
            "after_epoch1_unseen": merged.metrics(g, lambda seen, ep: (ep >= 1) & ~seen),
            "epoch1": merged.metrics(g, lambda seen, ep: ep == 0),
        }
    return {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
            "world": fit.to_dict(), "n_prompts": runs[0]["n_prompts"], "pool_size": runs[0]["pool_size"],
            "steps": runs[0]["steps"], "steps_per_epoch": runs[0]["steps_per_epoch"],
            "samplers": rows, "per_epoch": {s: v.tolist() for s, v in per_epoch.items()},
            "prediction": prediction,
            "book_seconds_per_step": {k: float(np.mean([r["book_seconds"][k] for r in runs])) for k in runs[0]["book_seconds"]},
            "book_stats": runs[0]["book_stats"]}


def write_outputs(result: dict, out: Path) -> dict[str, Path]:
    from preroll._optional import require

    require("matplotlib", what="drawing a plot").use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    path_json = out / "results.json"
    atomic_write_text(path_json, json.dumps(result, indent=2, default=float))
    fig, ax = plt.subplots(figsize=(7, 4))
    uni = np.array(result["per_epoch"]["uniform"])
    for s, v in result["per_epoch"].items():
        ax.plot(np.arange(1, len(v) + 1), np.array(v) / uni, marker="o", label=s)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("informative groups per rollout, x uniform")
    ax.set_title(f"{result['n_prompts']} prompts, batch {result['config']['batch']}, "
                 f"pool {result['config']['pool_factor']}x, groups of {result['config']['group_size']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path_png = out / "online.png"
    save_figure(fig, path_png)
    return {"json": path_json, "png": path_png}


@dataclass(frozen=True)
class Overhead:
    """Seconds the book adds per trainer step, and memory, at a given scale."""

    n_prompts: int
    pool: int
    batch: int
    history_rows: int
    graph_seconds: float          # one-off: neighbour graph from embeddings
    prefill_seconds: float        # recording the history, in steps
    record_seconds: float         # per step, means over the timed steps
    predict_seconds: float
    select_seconds: float
    step_seconds: float
    step_seconds_max: float
    peak_traced_mb: float         # peak Python/numpy allocation during the timed steps (tracemalloc)
    max_rss_mb: float             # the process's peak resident set
    save_seconds: float
    state_mb: float


def measure_overhead(*, n_prompts: int = 20_000, pool: int = 2048, batch: int = 512, history_rows: int = 50_000,
                     group_size: int = 8, steps: int = 20, dim: int = 128, seed: int = 0,
                     workdir: Path | None = None) -> Overhead:
    """Time record + predict + select per step for a ``pool``-prompt pool after ``history_rows`` recorded rows.

    The dataset is synthetic (random unit embeddings, rates from a U-shaped
    Beta): the book's cost does not depend on what the texts say.
    """
    import resource
    import tempfile
    import tracemalloc

    from preroll.online import OnlineSettings, PromptBook

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n_prompts, dim)).astype(np.float32)
    texts = [f"prompt {i}" for i in range(n_prompts)]
    rates = rng.beta(0.4, 0.4, n_prompts)
    book = PromptBook(texts, ids=list(range(n_prompts)), settings=OnlineSettings(group_size=group_size, seed=seed),
                      embeddings=emb)
    t0 = time.perf_counter()
    book._neighbour_graph()
    graph_s = time.perf_counter() - t0
    step = 0
    t0 = time.perf_counter()
    while book.rows_ < history_rows:
        idx = rng.choice(n_prompts, batch, replace=False)
        k = rng.binomial(group_size, rates[idx])
        book.record(step, idx, _groups(k, group_size))
        step += 1
    prefill_s = time.perf_counter() - t0
    prefilled = book.rows_
    rec, pre, sel, tot = [], [], [], []
    tracemalloc.start()
    for _ in range(steps):
        candidates = rng.choice(n_prompts, pool, replace=False)
        k_all = rng.binomial(group_size, rates)
        t0 = time.perf_counter()
        book.predict(candidates)
        t1 = time.perf_counter()
        chosen = book.select(candidates, batch).indices
        t2 = time.perf_counter()
        groups = _groups(k_all[chosen], group_size)
        t3 = time.perf_counter()
        book.record(step, chosen, groups)
        t4 = time.perf_counter()
        step += 1
        pre.append(t1 - t0)
        sel.append(t2 - t1)
        rec.append(t4 - t3)
        tot.append((t2 - t0) + (t4 - t3))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        t0 = time.perf_counter()
        path = book.save(Path(tmp) / "book.npz")
        save_s = time.perf_counter() - t0
        state_mb = path.stat().st_size / 2 ** 20
    return Overhead(n_prompts=n_prompts, pool=pool, batch=batch, history_rows=prefilled, graph_seconds=graph_s,
                    prefill_seconds=prefill_s, record_seconds=float(np.mean(rec)), predict_seconds=float(np.mean(pre)),
                    select_seconds=float(np.mean(sel)), step_seconds=float(np.mean(tot)),
                    step_seconds_max=float(np.max(tot)), peak_traced_mb=peak / 2 ** 20,
                    max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, save_seconds=save_s,
                    state_mb=state_mb)


def _groups(k: np.ndarray, g: int) -> list[np.ndarray]:
    """0/1 reward groups with k successes each (the trainer's rewards, as the book receives them)."""
    return [np.r_[np.ones(int(ki)), np.zeros(g - int(ki))] for ki in k]
