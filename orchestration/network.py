"""Network scenarios: several links run together (``mdiqkd run NETWORK.yaml``).

A network file is YAML with a top-level ``links:`` list; each link names a link scenario (a file,
relative to the network file, or a shipped scenario's name), optional ``overrides`` of that
scenario's top-level fields, an optional ``seed`` and the ``sites`` its Alice, Bob and Charles
stand at. Links that name the same site share it (several user pairs at one relay site): their
node programs there go on the same host (``orchestration.network_run``). Format:
docs/scenario-format.md, "Network scenarios".

Each link's seed, unless given, is ``derive_seed(network seed, "network link NAME")``
(``link_seed``): the link run alone with that seed (``mdiqkd run LINK.yaml --seed S``) delivers
the same keys, so its ``determinism_fingerprint`` is the same.

Errors are one line per problem, ``FILE:LINE: field.path: message``, in the network file (an
override is reported where it is written: ``links.N.overrides.FIELD``) or in a link's scenario.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from channel.rng import derive_seed
from orchestration.config import (
    MAX_SEED,
    Scenario,
    ScenarioError,
    is_network_data,
    line_of,
    read_scenario_yaml,
    refuse_booleans,
    resolve_scenario,
    shipped_scenarios,
    validation_problems,
)
from orchestration.experiment import FieldProblem, Tags

#: Most links a network lists (each is four node programs).
MAX_LINKS = 64
#: A link's or a site's name: it names a directory and a Ray resource.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: The sites of a link: where its node programs run (nature sits with the relay, Charles).
ROLES = ("alice", "bob", "charles")
SITE_ROLE = {"alice": "alice", "bob": "bob", "charles": "charles", "nature": "charles"}


class _Model(BaseModel):
    # as a link scenario's models: unknown fields, NaN and booleans for numbers refused
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_booleans(value, info, {n: _number_type(f.annotation) for n, f in
                                             cls.model_fields.items()})


def _number_type(annotation: Any) -> Any:
    """``int`` or ``float`` for a field of that type, optional or not; else the annotation."""
    return next((a for a in (get_args(annotation) or (annotation,)) if a in (int, float)),
                annotation)


class SitesModel(_Model):
    """Where a link's Alice, Bob and Charles stand; each defaults to ``LINK-ROLE``."""

    alice: str | None = Field(None, pattern=NAME_PATTERN)
    bob: str | None = Field(None, pattern=NAME_PATTERN)
    charles: str | None = Field(None, pattern=NAME_PATTERN)


class LinkModel(_Model):
    name: str = Field(pattern=NAME_PATTERN, description="the link's name: its run "
                      "sub-directory links/NAME and its line in network.json")
    scenario: str = Field(min_length=1, description="a link scenario file (relative to the "
                          "network file) or a shipped scenario's name")
    overrides: dict[str, Any] = Field(default_factory=dict, description="top-level fields of "
                                      "the link scenario to replace (a section is replaced "
                                      "whole)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="default: derived from the "
                             "network's seed and the link's name")
    sites: SitesModel = SitesModel()

    @model_validator(mode="after")
    def _seed_not_overridden(self) -> LinkModel:
        if "seed" in self.overrides:
            raise FieldProblem(("overrides", "seed"), "give a link's seed as links.N.seed")
        return self


class NetworkScenario(_Model):
    title: str
    description: str = ""
    tags: Tags | None = None
    seed: int = Field(0, ge=0, le=MAX_SEED)
    links: list[LinkModel] = Field(min_length=1, max_length=MAX_LINKS)

    @model_validator(mode="after")
    def _distinct_names(self) -> NetworkScenario:
        seen: set[str] = set()
        for k, link in enumerate(self.links):
            if link.name in seen:
                raise FieldProblem(("links", k, "name"), f"link name {link.name!r} is used "
                                   "twice (each link has its own run sub-directory)")
            seen.add(link.name)
        return self


def link_seed(network_seed: int, name: str) -> int:
    """A link's seed when the network file gives none."""
    return derive_seed(network_seed, f"network link {name}")


def link_sites(link: LinkModel) -> dict[str, str]:
    """Role → site of a link (``alice``, ``bob``, ``charles``), defaults filled in."""
    given = link.sites.model_dump()
    return {role: given[role] or f"{link.name}-{role}" for role in ROLES}


@dataclass(frozen=True)
class NetworkLink:
    name: str
    scenario: Scenario  # with the link's seed and every override
    seed: int
    sites: dict[str, str]
    source: str  # the link scenario file as the network names it


@dataclass(frozen=True)
class Network:
    title: str
    seed: int
    links: tuple[NetworkLink, ...]
    path: str
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def sites(self) -> list[str]:
        """Every site, in order of first appearance."""
        return list(dict.fromkeys(s for link in self.links for s in link.sites.values()))


def is_network_file(path: Path | Traversable) -> bool:
    """Whether a scenario file is a network scenario (ScenarioError if it cannot be read)."""
    return is_network_data(read_scenario_yaml(path)[0])


def shipped_networks() -> dict[str, Traversable]:
    """The network scenarios installed with the package, by name (``shipped_scenarios`` lists
    the link scenarios only)."""
    found = (p for p in resources.files("scenarios").iterdir() if p.name.endswith(".yaml"))
    return {p.name.removesuffix(".yaml"): p for p in sorted(found, key=lambda p: p.name)
            if is_network_data(yaml.safe_load(p.read_text()))}


def resolve_any(ref: str | Path | None) -> Traversable:
    """A scenario file from what a user typed: a file, a shipped link scenario's name or a
    shipped network's name (``resolve_scenario`` for the first two)."""
    name = str(ref).removesuffix(".yaml") if ref is not None else ""
    if ref is not None and not Path(ref).exists():
        networks = shipped_networks()
        if name in networks:
            return networks[name]
    try:
        return resolve_scenario(ref)
    except ScenarioError as e:
        if ref is not None and not Path(ref).exists():
            names = ", ".join([*shipped_scenarios(), *shipped_networks()])
            raise ScenarioError(f"{ref}: no such file, and no shipped scenario of that name "
                                f"(shipped: {names}; `mdiqkd scenario list` shows them)"
                                ) from None
        raise e from None


def _inside(base: Path | Traversable, ref: str) -> bool:
    """``ref`` names a file in the network file's directory or below it (or a shipped name)."""
    if Path(ref).is_absolute():
        return False
    if not isinstance(base, Path):  # a shipped network: its links are shipped names
        return ".." not in Path(ref).parts
    return (base / ref).resolve().is_relative_to(base.resolve())


def _link_file(base: Path | Traversable, ref: str) -> Path | Traversable | None:
    """A link's scenario file: relative to the network file's directory, else shipped."""
    candidate = base / ref
    if candidate.is_file():
        return candidate
    shipped = shipped_scenarios()
    return shipped.get(ref.removesuffix(".yaml"))


def load_network(path: Path | Traversable, overrides: dict[str, Any] | None = None,
                 link_overrides: dict[str, Any] | None = None) -> Network:
    """Read and validate a network file and every link's scenario. ``overrides``: top-level
    fields of the network (``seed``); ``link_overrides``: fields applied to every link last (a
    command line's ``--rounds``, reported as that option)."""
    if isinstance(path, str):
        path = Path(path)
    data, root = read_scenario_yaml(path)
    if not is_network_data(data):
        raise ScenarioError(f"{path}: a network scenario must be a mapping with links")
    data.update(overrides or {})
    try:
        model = NetworkScenario.model_validate(data)
    except RecursionError:
        raise ScenarioError(f"{path}: nested too deeply") from None
    except ValidationError as e:
        raise ScenarioError("; ".join(validation_problems(
            e, path.name, root, overrides or {}, model=NetworkScenario))) from None
    base = path.parent
    links = []
    for k, link in enumerate(model.links):
        seed = link.seed if link.seed is not None else link_seed(model.seed, link.name)
        scenario = _load_link(path.name, root, k, link, base, seed, link_overrides or {})
        links.append(NetworkLink(link.name, scenario, seed, link_sites(link), link.scenario))
    return Network(model.title, model.seed, tuple(links), str(path), tuple(model.tags or ()))


def _load_link(name: str, root: yaml.Node | None, k: int, link: LinkModel,
               base: Path | Traversable, seed: int, cli: dict[str, Any]) -> Scenario:
    at = ("links", k)

    def where(loc: tuple[Any, ...], key: bool = False) -> str:
        line = line_of(root, loc, key)
        return f"{name}:{line}" if line else name

    if not _inside(base, link.scenario):  # never read a file elsewhere on the machine
        raise ScenarioError(
            f"{where((*at, 'scenario'))}: links.{k}.scenario: {link.scenario!r} is outside the "
            "network file's directory: give a path inside it, or a shipped scenario's name")
    ref = _link_file(base, link.scenario)
    if ref is None:
        raise ScenarioError(
            f"{where((*at, 'scenario'))}: links.{k}.scenario: {link.scenario!r} is neither a "
            f"file beside the network file nor a shipped scenario (shipped: "
            f"{', '.join(shipped_scenarios())})")
    try:
        data, link_root = read_scenario_yaml(ref)
    except ScenarioError as e:  # the link's own file: said with the network's line and link
        raise ScenarioError(f"{where((*at, 'scenario'))}: links.{k}.scenario ({link.name}): "
                            f"{e}") from None
    if is_network_data(data):
        raise ScenarioError(f"{where((*at, 'scenario'))}: links.{k}.scenario: "
                            f"{link.scenario} is a network, not a link scenario")
    if not isinstance(data, dict):
        raise ScenarioError(f"{ref}: a scenario must be a mapping of fields")
    given = {**link.overrides, "seed": seed, **cli}
    data.update(given)

    def override_where(loc: tuple[Any, ...], unknown: bool) -> str:
        if loc[0] in cli:
            return f"--{str(loc[0]).replace('_', '-')}"
        full = (*at, "overrides", *loc)
        return f"{where(full, unknown)}: {'.'.join(str(p) for p in full)}"

    try:
        return Scenario.model_validate(data)
    except RecursionError:
        raise ScenarioError(f"{ref}: nested too deeply") from None
    except ValidationError as e:
        problems = validation_problems(e, Path(str(ref)).name, link_root, given,
                                       override_where=override_where)
        raise ScenarioError("; ".join(problems) + f" (link {link.name})") from None
