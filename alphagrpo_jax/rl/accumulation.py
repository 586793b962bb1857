"""How a step's rounds add up to one update: advantage populations, skipped rounds, round weights, divisor.

The reference (JunyiWuCode/AlphaGRPO@1f604ff, alpha_grpo/train.py under accelerate + DeepSpeed) rolls out rounds
of 8 prompts x 14 samples, normalises each round's advantages by the std of that round's rewards, and takes one
backward per trained image step and one for the think text, each divided by the accumulation count
ga x (W + 1) (ga = rounds per update, W = trained image steps; a text-only run counts 1 per round, a mixed
RT2I + SRR run both rounds of each rollout). Its clipped gradient is therefore

    sum over its rounds u of (sum_j dL_j(u) + W * text_loss_weight * dL_text(u)) / (sum over u of calls(u)),

where calls(u) = W + 1: the mean over rounds of our per-round loss (image steps summed + weighted text) divided
by W + 1. A round whose advantages are all zero (SRR: where nothing improved on its stage-1 image) is skipped and
replaced by one more rollout, so an update always has ga rounds with signal.

Here a round of P prompts may hold several reference rounds or part of one (the mesh presets change P), so:
 - advantages are normalised over consecutive `population` prompts of one task (default 8: the reference's
   round), whatever P is (population 0: each round is one population, as before 2026-12); a "block" of rounds
   (one round, or population / P rounds of one task) holds whole populations and is the unit that is skipped
   and redrawn;
 - normalization "reference": round r's loss is weighted by P / population (the reference rounds it holds) and
   the sum is divided by the static sum over the step's nominal rounds of P / population x calls(kind), as the
   reference's fixed accumulation count; "round_mean" (this project's behaviour before 2026-12): the mean of
   the used rounds' losses, unweighted;
 - skipped "redraw": a skipped block is replaced by as many new rounds of its task (the data iterator's next
   prompts, round keys continuing the step's round index), at most `max_extra_rounds` per step; past the cap the
   step goes on with the rounds it has (a warning; the divisor stays the nominal one). "drop": skipped blocks
   are left out (the update averages fewer rounds under round_mean).
"""
from __future__ import annotations

import dataclasses

NORMALIZATIONS = ("reference", "round_mean")
SKIPPED = ("redraw", "drop")


def backward_calls(window: int, train_image: bool, train_text: bool) -> int:
    """The reference's backward calls for one round: one per trained image step plus one for the think text."""
    return (window if train_image and window > 0 else 0) + (1 if train_text else 0)


@dataclasses.dataclass(frozen=True)
class Accumulation:
    normalization: str            # "reference" | "round_mean"
    skipped: str                  # "redraw" | "drop"
    max_extra_rounds: int         # cap on redrawn rounds per step
    population: int               # prompts per advantage population
    prompts_per_round: int
    kinds: tuple[str, ...]        # the step's nominal rounds' tasks, in order (kinds cycle over a run's rounds)
    calls: dict                   # task -> backward calls per reference round (backward_calls)

    @property
    def block_rounds(self) -> int:
        """Rounds per block: the fewest consecutive rounds of one task that hold whole populations."""
        return max(1, self.population // self.prompts_per_round)

    def blocks(self) -> list[list[int]]:
        """The step's nominal rounds (indices into `kinds`) grouped into blocks, per task in order."""
        out = []
        for kind in dict.fromkeys(self.kinds):
            idx = [i for i, k in enumerate(self.kinds) if k == kind]
            out += [idx[i:i + self.block_rounds] for i in range(0, len(idx), self.block_rounds)]
        return sorted(out)

    def round_scale(self) -> float:
        """Weight of one round's loss in the gradient sum."""
        return self.prompts_per_round / self.population if self.normalization == "reference" else 1.0

    def divisor(self, used_rounds: int) -> float:
        """What the weighted gradient sum is divided by (0 rounds used: no update is applied)."""
        if self.normalization == "reference":
            return sum(self.prompts_per_round / self.population * self.calls[k] for k in self.kinds)
        return float(used_rounds)


def step_kinds(config, step: int) -> tuple[str, ...]:
    """The tasks of step `step`'s nominal rounds (config.task.kinds cycle over the run's rounds)."""
    kinds, n = tuple(config.task.kinds), config.rollout.rounds_per_step
    return tuple(kinds[((step - 1) * n + rnd) % len(kinds)] for rnd in range(n))


def from_config(config, kinds: tuple[str, ...], calls: dict) -> Accumulation:
    """The Accumulation of `config` for a step whose nominal rounds have tasks `kinds`. One-line errors name the
    config key."""
    t, ppr = config.train, int(config.rollout.prompts_per_round)
    p = int(config.advantage.population) or ppr  # 0: each round is one population (mesh-dependent)
    norm, skipped = config.loss.grad_normalization, t.skipped_rounds
    if norm not in NORMALIZATIONS:
        raise ValueError(f"loss.grad_normalization must be one of {NORMALIZATIONS}, got {norm!r}")
    if skipped not in SKIPPED:
        raise ValueError(f"train.skipped_rounds must be one of {SKIPPED}, got {skipped!r}")
    if int(t.max_extra_rounds) < 0:
        raise ValueError(f"train.max_extra_rounds must be >= 0, got {t.max_extra_rounds}")
    if p < 0 or (ppr % p and p % ppr):
        raise ValueError(f"advantage.population = {p}: must divide rollout.prompts_per_round = {ppr} or be a "
                         "multiple of it (a population is whole reference rounds of consecutive prompts)")
    acc = Accumulation(norm, skipped, int(t.max_extra_rounds), p, ppr, tuple(kinds), dict(calls))
    for kind in dict.fromkeys(kinds):
        n = sum(k == kind for k in kinds)
        if n % acc.block_rounds:
            raise ValueError(f"advantage.population = {p}: a step's {kind} rounds hold {n} x {ppr} prompts, not a "
                             f"multiple of the population (set rollout.rounds_per_step or advantage.population)")
    return acc
