"""The search space of a sweep: Hydra overrides turned into Optuna distributions.

    key=interval(a,b)              FloatDistribution(a, b)
    key=tag(log, interval(a,b))    FloatDistribution(a, b, log=True)
    key=int(interval(a,b))         IntDistribution(a, b)          (with tag(log, ...): log=True)
    key=range(a,b[,step])          IntDistribution(a, last, step) (last: range's last value, b
                                   excluded as in Hydra's basic sweeper; float bounds or step:
                                   FloatDistribution(..., step=step))
    key=choice(x,y,...) / key=x,y  CategoricalDistribution([x, y, ...])
    key=value                      fixed: passed unchanged to every trial

Choices that are not str, int, float, bool or null (lists, dicts) are kept as their override
text, e.g. "[T1wCE,FLAIR]", which is what the trial's override then says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


class SearchSpaceError(ValueError):
    """A search-space entry the sweeper cannot turn into an Optuna distribution."""


@dataclass
class SearchSpace:
    """What a sweep varies (`distributions`) and what it passes unchanged to every trial
    (`fixed`: override text by key)."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)
    # the override text of a categorical parameter's string choices, where it differs from
    # the choice (escaped characters)
    choice_text: dict[str, dict[str, str]] = field(default_factory=dict)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """A trial's overrides: the fixed ones, then `key=value` for each sampled value."""
        sampled = [f"{key}={self.value_text(key, value)}" for key, value in params.items()]
        return [*self.fixed.values(), *sampled]

    def value_text(self, key: str, value: Any) -> str:
        if isinstance(value, str) and value in self.choice_text.get(key, {}):
            return self.choice_text[key][value]
        return format_value(value)


def format_value(value: Any) -> str:
    """A value as override text: floats keep every digit, strings are taken as they are."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, (dict, DictConfig)):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _choices(override: Override) -> tuple[list[Any], dict[str, str]]:
    """The elements of a choice or range sweep as Optuna choices, and their override text."""
    choices: list[Any] = []
    texts: dict[str, str] = {}
    for element in override.sweep_iterator(transformer=Transformer.identity):
        choice = Transformer.encode(element)
        if not isinstance(choice, (str, int, float, bool, type(None))):
            raise SearchSpaceError(f"{override.input_line}: a choice must be a str, int, "
                                   f"float, bool or null, not {type(choice).__name__}")
        choices.append(choice)
        text = Transformer.str(element)
        if isinstance(choice, str) and text != choice:  # escaped characters
            texts[choice] = text
    if not choices:
        raise SearchSpaceError(f"{override.input_line}: nothing to choose from")
    return choices, texts


def _range_distribution(override: Override, value: RangeSweep) -> BaseDistribution:
    numbers, _ = _choices(override)
    step = abs(value.step)
    if all(isinstance(n, int) and not isinstance(n, bool) for n in numbers) and isinstance(
            step, int):
        return IntDistribution(min(numbers), max(numbers), step=step)
    low, high = float(min(numbers)), float(max(numbers))
    # Hydra adds float steps up exactly (decimal); keep the bounds as short decimals so that
    # Optuna finds (high - low) a multiple of the step
    return FloatDistribution(round(low, 12), round(high, 12), step=float(step))


def _interval_distribution(override: Override, value: IntervalSweep) -> BaseDistribution:
    if value.start is None or value.end is None:
        raise SearchSpaceError(f"{override.input_line}: an interval needs both bounds")
    log = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(value.start, value.end, log=log)
    return FloatDistribution(float(value.start), float(value.end), log=log)


def distribution_from_override(override: Override,
                               ) -> tuple[BaseDistribution, dict[str, str]]:
    """The Optuna distribution of a sweep override (and the override text of its choices)."""
    value = override.value()
    try:
        if isinstance(value, RangeSweep) and not value.shuffle:
            return _range_distribution(override, value), {}
        if isinstance(value, (ChoiceSweep, RangeSweep)):  # a shuffled range: its values
            choices, texts = _choices(override)
            return CategoricalDistribution(choices), texts
        if isinstance(value, IntervalSweep):
            return _interval_distribution(override, value), {}
    except SearchSpaceError:
        raise
    except ValueError as error:  # Optuna's checks, e.g. low > high, log with low <= 0
        raise SearchSpaceError(f"{override.input_line}: {error}") from error
    raise SearchSpaceError(f"{override.input_line}: the Optuna sweeper takes interval(), "
                           "range(), choice() (or a,b,c) and fixed values, not this sweep")


def distribution_from_config(name: str, entry: Mapping[str, Any]) -> BaseDistribution:
    """A distribution of the older `search_space` form ({type, low, high, log, step, choices})."""
    entry = dict(entry)
    kind = str(getattr(entry.get("type"), "name", entry.get("type")))
    low, high, step, log = entry.get("low"), entry.get("high"), entry.get("step"), entry.get(
        "log", False)
    try:
        if kind == "categorical":
            if not entry.get("choices"):
                raise SearchSpaceError(f"search_space.{name}: a categorical needs choices")
            return CategoricalDistribution(list(entry["choices"]))
        if kind in ("int", "float") and (low is None or high is None):
            raise SearchSpaceError(f"search_space.{name}: {kind} needs low and high")
        if kind == "int":
            return IntDistribution(int(low), int(high), log=bool(log),
                                   step=int(step) if step is not None else 1)
        if kind == "float":
            return FloatDistribution(float(low), float(high), log=bool(log),
                                     step=float(step) if step is not None else None)
    except SearchSpaceError:
        raise
    except ValueError as error:
        raise SearchSpaceError(f"search_space.{name}: {error}") from error
    raise SearchSpaceError(f"search_space.{name}: type must be int, float or categorical, "
                           f"not {entry.get('type')!r}")


def params_as_overrides(params: Mapping[str, Any] | None) -> list[str]:
    """`hydra.sweeper.params` as override strings (a non-string value is a fixed value)."""
    if not params:
        return []
    return [f"{key}={value if isinstance(value, str) else format_value(value)}"
            for key, value in params.items()]


def parse_search_space(arguments: Iterable[str], search_space: Mapping[str, Any] | None = None,
                       ) -> SearchSpace:
    """The search space of `arguments` (overrides: the sweeper's params, then the command
    line's), after the older `search_space` entries. A later entry for a key replaces an
    earlier one, so that a command-line `key=value` fixes a key the config sweeps."""
    space = SearchSpace()
    for name, entry in (search_space or {}).items():
        if isinstance(entry, DictConfig):
            entry = OmegaConf.to_container(entry, resolve=True)
        space.distributions[str(name)] = distribution_from_config(str(name), entry)
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key = override.get_key_element()
        space.distributions.pop(key, None)
        space.fixed.pop(key, None)
        space.choice_text.pop(key, None)
        if override.is_sweep_override():
            distribution, texts = distribution_from_override(override)
            space.distributions[key] = distribution
            if texts:
                space.choice_text[key] = texts
        else:
            space.fixed[key] = override.input_line or (
                f"{key}={override.get_value_element_as_str()}")
    return space


def grid_values(name: str, distribution: BaseDistribution) -> Sequence[Any]:
    """Every value of a discrete distribution, for optuna.samplers.GridSampler."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    if (isinstance(distribution, FloatDistribution) and distribution.step is not None
            and not distribution.log):
        n = int(math.floor((distribution.high - distribution.low) / distribution.step + 1e-9))
        return [round(distribution.low + i * distribution.step, 12) for i in range(n + 1)]
    raise SearchSpaceError(f"{name}: the grid sampler needs a discrete search space (choice, "
                           f"range, int(interval)), not {distribution}")
