"""The metric registry: names and aliases to metric classes, built-ins and plugins alike.

Built-in metrics are described by cards, TOML files in ``spips_bench/cards/`` (one table per metric):
listing the zoo reads only the cards, so it imports no model. A metric class is imported when the
metric is created. Third-party packages add metrics through the entry-point group
``spips_bench.metrics``: each entry point names a :class:`~spips_bench.metric.Metric` subclass
(``name = "pkg.module:Class"``) whose class attributes carry the metadata, or a :class:`MetricSpec`.
"""

from __future__ import annotations

import difflib
import importlib
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from importlib.metadata import entry_points
from typing import Any

from spips_bench.errors import UnknownMetricError

ENTRY_POINT_GROUP = "spips_bench.metrics"


@dataclass(frozen=True)
class MetricSpec:
    """What the registry knows about a metric before importing it.

    Attributes:
        name: the registry name (lower case, ``-`` between words).
        target: ``"module:Class"``; the class is a :class:`~spips_bench.metric.Metric` subclass.
        higher_is_better: direction of the score.
        min_size: smallest accepted height/width in pixels.
        symmetric: ``d(a, b) == d(b, a)``.
        weights: names of the weight files it needs (:mod:`spips_bench.weights`).
        options: keyword arguments passed to the class (the variant's defaults).
        aliases: other names that resolve to this metric.
        citation: short reference with DOI/arXiv id.
        description: one line for ``spips-bench list``.
        trained: ``False`` when the metric's learned parts run from a data-free initialisation.
        requires: optional Python packages (import names) the metric needs beyond the core install.
        ablation_of: for an ablated variant, the name of the full metric (tables group them).
        differentiable: whether the score, with these options, has real gradients with respect to the
            images (``False`` where e.g. an 8-bit rounding makes them zero; the metric then warns when
            its input requires grad). ``False`` for a plugin class that does not say.
        source: ``"builtin"`` or the distribution that provided the plugin.
        paper_row: the row of the SPIPS paper's tables that this metric's results are compared with
            (``tables --compare-paper``); ``None`` where the paper has no such row.
        pyiqa_bridge: whether :func:`spips_bench.integrations.pyiqa.register` offers the metric to pyiqa's
            ``create_metric`` by default.
        display: the metric's name in the paper-layout tables (``"MS-SSIM"``, ``"SPIPS (ours)"``); empty
            (the default) shows :attr:`name`.
    """

    name: str
    target: str
    higher_is_better: bool
    min_size: int = 1
    symmetric: bool = True
    weights: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    citation: str = ""
    description: str = ""
    trained: bool = True
    requires: tuple[str, ...] = ()
    ablation_of: str | None = None
    differentiable: bool = False
    source: str = "builtin"
    paper_row: str | None = None
    pyiqa_bridge: bool = False
    display: str = ""

    def __post_init__(self) -> None:
        if not self.display:
            object.__setattr__(self, "display", self.name)

    @property
    def direction(self) -> str:
        """``"higher"`` or ``"lower"``: which scores mean more similar."""
        return "higher" if self.higher_is_better else "lower"

    def missing_weights(self) -> list[str]:
        """Names of this metric's weight files that are not available on this machine."""
        if not self.weights:
            return []
        from spips_bench import weights

        return [w for w in self.weights if not weights.is_present(w)]

    @property
    def packages(self) -> tuple[str, ...]:
        """Every optional package (import name) the metric uses: ``requires``, then the packages that ship
        one of its weight files (:attr:`spips_bench.weights.WeightFile.package`), derived, never listed
        twice."""
        if not self.weights:
            return self.requires
        from spips_bench.weights import WEIGHTS

        shipped = [wf.package[0] for wf in (WEIGHTS.get(w) for w in self.weights) if wf and wf.package]
        return tuple(dict.fromkeys([*self.requires, *shipped]))

    def missing_requirements(self) -> list[str]:
        """Packages of :attr:`packages` that stop this metric on this machine (found without importing them).

        A package of ``requires`` is needed always; a package that ships a weight file is needed only
        while no other copy of that file is found (``$SPIPS_BENCH_WEIGHTS``, the torch hub cache).
        """
        import importlib.util

        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if self.weights:
            from spips_bench.weights import WEIGHTS

            for name in self.missing_weights():
                shipped_in = WEIGHTS[name].package if name in WEIGHTS else None
                if shipped_in is not None and importlib.util.find_spec(shipped_in[0]) is None:
                    missing.append(shipped_in[0])
        return list(dict.fromkeys(missing))

    def unavailable_reason(self) -> str | None:
        """Why this metric cannot run on this machine (missing package or weights), or ``None``."""
        missing = self.missing_requirements()
        if missing:
            names = ", ".join(DISTRIBUTIONS.get(m, m) for m in missing)
            return f"needs {_plural(missing, 'package')} {names}, not installed: `{pip_install_line(missing)}`"
        absent = self.missing_weights()
        if absent:
            return (f"{_plural(absent, 'weight file')} {', '.join(absent)} not on this machine: "
                    f"`spips-bench weights fetch {' '.join(absent)}` where there is network")
        return None

    def load_class(self) -> type:
        module_name, _, attr = self.target.partition(":")
        if not attr:
            raise ValueError(f"metric {self.name!r}: target {self.target!r} must look like 'module:Class'")
        return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]


#: pip's name of each optional package that a card's ``requires`` or a weight file's ``package`` may name by
#: its import name (and of pyiqa, for :mod:`spips_bench.integrations.pyiqa`); every one of them is in the
#: ``all`` extra of ``pyproject.toml``, which a test checks.
DISTRIBUTIONS: dict[str, str] = {
    "pyiqa": "pyiqa",
    "lpips": "lpips",
    "DISTS_pytorch": "DISTS_pytorch",
    "stlpips_pytorch": "stlpips-pytorch",
}
#: The extra of ``pyproject.toml`` that installs every package that makes a metric work offline.
ALL_EXTRA = "all"


def pip_install_line(packages: Iterable[str]) -> str:
    """The exact command that installs ``packages`` (import names), e.g. ``pip install stlpips-pytorch``."""
    return "pip install " + " ".join(DISTRIBUTIONS.get(p, p) for p in packages)


def _plural(items: Sequence[str], noun: str) -> str:
    return noun if len(items) == 1 else noun + "s"


class Registry:
    """A set of metric specs, addressable by name or alias (case-insensitive)."""

    def __init__(self) -> None:
        self._specs: dict[str, MetricSpec] = {}
        self._aliases: dict[str, str] = {}
        self._loaded_builtins = False
        self._loaded_plugins = False
        self.plugin_errors: dict[str, str] = {}

    # -- registration ------------------------------------------------------------------------------

    def register(self, spec: MetricSpec, *, overwrite: bool = False) -> MetricSpec:
        """Add ``spec``. A name or alias that is already taken is an error unless ``overwrite``."""
        key = _key(spec.name)
        for k in (key, *map(_key, spec.aliases)):
            owner = self._aliases.get(k)
            if owner is not None and owner != key and not overwrite:
                raise ValueError(
                    f"cannot register metric {spec.name!r}: the name {k!r} already belongs to {owner!r}. "
                    "Choose another name or pass overwrite=True."
                )
        if key in self._specs and not overwrite:
            raise ValueError(f"metric {spec.name!r} is already registered; pass overwrite=True to replace it.")
        self._specs[key] = spec
        self._aliases[key] = key
        for alias in spec.aliases:
            self._aliases[_key(alias)] = key
        return spec

    def register_class(self, cls: type, *, name: str | None = None, source: str = "builtin",
                       overwrite: bool = False, **options: Any) -> MetricSpec:
        """Register a :class:`~spips_bench.metric.Metric` subclass, reading metadata from its attributes."""
        spec = spec_from_class(cls, name=name, source=source, options=options)
        return self.register(spec, overwrite=overwrite)

    # -- lookup ------------------------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if not self._loaded_builtins:
            self._loaded_builtins = True
            for spec in load_cards():
                self.register(spec)
        if not self._loaded_plugins:
            self._loaded_plugins = True
            self._load_plugins()

    def _load_plugins(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown distribution"
            try:
                obj = ep.load()
                specs = _specs_from_plugin(obj, ep.name, dist)
            except Exception as exc:  # a broken plugin must not break the zoo; it is reported instead
                self.plugin_errors[ep.name] = f"{dist}: {type(exc).__name__}: {exc}"
                continue
            for spec in specs:
                if _key(spec.name) in self._aliases:
                    self.plugin_errors[spec.name] = (
                        f"{dist}: name {spec.name!r} is already taken by a built-in metric; plugin ignored"
                    )
                    continue
                self.register(spec)

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(s.name for s in self._specs.values())

    def specs(self) -> list[MetricSpec]:
        self._ensure_loaded()
        return [self._specs[k] for k in sorted(self._specs)]

    def get(self, name: str) -> MetricSpec:
        """The spec of ``name`` (or of an alias); unknown names fail with suggestions."""
        self._ensure_loaded()
        key = self._aliases.get(_key(name))
        if key is None:
            choices = sorted(self._aliases)
            close = difflib.get_close_matches(_key(name), choices, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownMetricError(
                f"unknown metric {name!r}.{hint} Run `spips-bench list` to see all {len(self._specs)} metrics."
            )
        return self._specs[key]

    def create(self, name: str, **options: Any) -> Any:
        """Instantiate metric ``name`` with the card's options updated by ``options``."""
        spec = self.get(name)
        cls = spec.load_class()
        kwargs = {**spec.options, **options}
        metric = cls(**kwargs)
        return metric


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _declared(cls: type, attr: str, default: Any) -> Any:
    """The value of class attribute ``attr`` as ``cls`` declares it, or ``default`` where only the metric
    contract's property (which reads the spec being built) stands there."""
    for klass in cls.__mro__:
        if attr in klass.__dict__:
            value = klass.__dict__[attr]
            return default if isinstance(value, property) else value
    return default


def spec_from_class(cls: type, *, name: str | None = None, source: str = "builtin",
                    options: dict[str, Any] | None = None) -> MetricSpec:
    """Build a spec from a Metric subclass's class attributes (a plugin's declaration of its metadata).

    Raises:
        TypeError: ``cls`` is not a subclass of :class:`spips_bench.metric.Metric`.
        ValueError: the class declares no ``name`` and none is passed.
    """
    # A Metric subclass exists only once spips_bench.metric is imported; looking it up there keeps this
    # module free of an import of the contract, which imports this module for Metric.spec.
    contract = sys.modules.get("spips_bench.metric")
    if contract is None or not (isinstance(cls, type) and issubclass(cls, contract.Metric)):
        raise TypeError(f"{cls!r} is not a subclass of spips_bench.metric.Metric")
    metric_name = name or _declared(cls, "name", "")
    if not metric_name:
        raise ValueError(f"{cls.__qualname__} has no `name`; set the class attribute or pass name=")
    return MetricSpec(
        name=metric_name,
        target=f"{cls.__module__}:{cls.__qualname__}",
        higher_is_better=bool(_declared(cls, "higher_is_better", False)),
        min_size=int(_declared(cls, "min_size", 1)),
        symmetric=bool(_declared(cls, "symmetric", True)),
        weights=tuple(_declared(cls, "weights", ())),
        options=dict(options or {}),
        citation=str(_declared(cls, "citation", "")),
        description=(cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
        trained=bool(_declared(cls, "trained", True)),
        differentiable=bool(_declared(cls, "differentiable", False)),
        source=source,
        paper_row=_declared(cls, "paper_row", None),
        pyiqa_bridge=bool(_declared(cls, "pyiqa_bridge", False)),
        display=str(_declared(cls, "display", "") or ""),
    )


def _canonical(value: Any) -> Any:
    """Option values as compared when matching an instance to a card (a TOML list equals a tuple)."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _class_card(metric: Any) -> MetricSpec:
    """The registered spec that describes ``metric``'s class and the variant its options select.

    A class with one card (or a plugin class, registered or not) has one spec. A class behind several
    cards (``MSSSIM`` behind ``ms-ssim`` and ``ms-ssim-wtd-sum``) is matched on the *selecting* options,
    those whose value (the card's, else the constructor's default) differs between its cards; the
    instance holds each option as an attribute of the same name. Options that select no card give the
    nearest card, renamed ``card[option=value, ...]`` after what differs.
    """
    import inspect

    cls = type(metric)
    target = f"{cls.__module__}:{cls.__qualname__}"
    cards = [s for s in REGISTRY.specs() if s.target == target]
    if not cards:
        return spec_from_class(cls, source="runtime")
    if len(cards) == 1:
        return cards[0]
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}

    def card_value(spec: MetricSpec, key: str) -> Any:
        return _canonical(spec.options.get(key, defaults.get(key)))

    keys = sorted({k for s in cards for k in s.options})
    selecting = [k for k in keys if len({repr(card_value(s, k)) for s in cards}) > 1]
    mine = {k: _canonical(getattr(metric, k, defaults.get(k))) for k in selecting}
    agree = [sum(card_value(s, k) == mine[k] for k in selecting) for s in cards]
    best = cards[agree.index(max(agree))]
    if max(agree) == len(selecting):
        return best
    differs = ", ".join(f"{k}={mine[k]!r}" for k in selecting if card_value(best, k) != mine[k])
    return replace(best, name=f"{best.name}[{differs}]", aliases=())


def spec_of(metric: Any) -> MetricSpec:
    """The metadata of a metric instance: its card (:func:`_class_card`), updated by ``metric.variant()``.

    This is what :attr:`spips_bench.metric.Metric.spec` returns; the card is found once per instance.
    """
    card = metric.__dict__.get("_card_spec")
    if card is None:
        card = _class_card(metric)
        metric.__dict__["_card_spec"] = card
    changes = metric.variant()
    return replace(card, **changes) if changes else card


def _specs_from_plugin(obj: Any, ep_name: str, dist: str) -> list[MetricSpec]:
    if isinstance(obj, MetricSpec):
        return [replace(obj, source=dist)]
    if isinstance(obj, type):
        return [spec_from_class(obj, name=getattr(obj, "name", "") or ep_name, source=dist)]
    if callable(obj):
        return _specs_from_plugin(obj(), ep_name, dist)
    if isinstance(obj, Iterable):
        out: list[MetricSpec] = []
        for item in obj:
            out.extend(_specs_from_plugin(item, ep_name, dist))
        return out
    raise TypeError(f"entry point {ep_name!r} gave {type(obj).__name__}; expected a Metric subclass or MetricSpec")


_CARD_FIELDS = {f for f in MetricSpec.__dataclass_fields__ if f not in ("name", "source")}


def load_cards() -> list[MetricSpec]:
    """Read every built-in card (``spips_bench/cards/*.toml``)."""
    specs: list[MetricSpec] = []
    root = resources.files("spips_bench") / "cards"
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".toml"):
            continue
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
        for name, table in data.items():
            unknown = set(table) - _CARD_FIELDS
            if unknown:
                raise ValueError(f"card {entry.name}, metric {name!r}: unknown field(s) {sorted(unknown)}")
            table = dict(table)
            for tup in ("weights", "aliases", "requires"):
                if tup in table:
                    table[tup] = tuple(table[tup])
            specs.append(MetricSpec(name=name, **table))
    return specs


#: The process-wide registry behind :func:`create_metric` and :func:`list_metrics`.
REGISTRY = Registry()


def create_metric(name: str, **options: Any) -> Any:
    """Create the metric registered as ``name`` (or an alias), e.g. ``create_metric("ssim")``."""
    return REGISTRY.create(name, **options)


def list_metrics() -> list[str]:
    """Names of every registered metric, built-ins and plugins, sorted."""
    return REGISTRY.names()


def get_spec(name: str) -> MetricSpec:
    """The :class:`MetricSpec` of ``name``."""
    return REGISTRY.get(name)


def accepts_option(spec: MetricSpec, option: str) -> bool:
    """Whether the metric class of ``spec`` takes the keyword ``option`` (imports the class)."""
    import inspect

    params = inspect.signature(spec.load_class()).parameters
    return option in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def register_metric(cls: type | None = None, *, name: str | None = None, **options: Any) -> Any:
    """Class decorator registering a Metric subclass in the process-wide registry.

    >>> @register_metric
    ... class MyMetric(Metric): ...
    """

    def deco(c: type) -> type:
        REGISTRY._ensure_loaded()
        REGISTRY.register_class(c, name=name, source="runtime", **options)
        return c

    return deco(cls) if cls is not None else deco
