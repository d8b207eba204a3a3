"""Domain priors: the one loader of data/priors/*.yaml, shared by the persona and competitor stages.

A domain prior holds everything the two stages draw from when no grounding data exists: the joint
demographic table, the customer segments (WTP, price sensitivity, adoption and churn traits, feature
importances), the canonical feature taxonomy with synonyms, and synthetic competitor archetypes.
Files are validated on load (bands, probabilities, feature ids, synonym clashes) and cached; a broken
file raises `PriorDataError` naming the file and the offending path, never a half-loaded prior.

Domain resolution (`resolve_domain`) normalises `idea.domain` through each prior's synonym list
("fintech" -> finance, "saas" -> b2b_saas); when the domain is empty or unknown it looks for each
prior's keywords in the idea's free text; when nothing is decisive it falls back to the general prior
and says so in `DomainResolution.warnings`.

The data directory is `<repo>/data` unless `SMVM_DATA_DIR` points elsewhere.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
FALLBACK_DOMAIN = "general"
# Every domain that must have a prior file (the list plus the fallback).
REQUIRED_DOMAINS = (
    "finance",
    "health",
    "education",
    "retail",
    "b2b_saas",
    "developer_tools",
    "consumer_subscription",
    "marketplace",
    FALLBACK_DOMAIN,
)
DIMENSIONS = ("age", "income", "occupation")
# Keyword detection: a domain wins when it has at least this many hits and strictly more than any other.
MIN_KEYWORD_SCORE = 2
# A synonym of a domain name found in the free text counts as this many keyword hits.
SYNONYM_IN_TEXT_SCORE = 2


class PriorDataError(ValueError):
    """A prior data file is missing or malformed (a packaging bug, not a user error)."""


def data_dir() -> Path:
    return Path(os.environ.get("SMVM_DATA_DIR", REPO_ROOT / "data"))


def priors_dir() -> Path:
    return data_dir() / "priors"


# --------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class IncomeBand:
    id: str
    low: float
    high: float | None
    mid: float


@dataclass(frozen=True)
class Demographics:
    """The base population (data/priors/demographics.yaml)."""

    age_bands: tuple[str, ...]
    income_bands: tuple[IncomeBand, ...]
    reference_income_usd: float
    occupation_labels: Mapping[str, str]
    # occupation -> band -> probability (each normalised to 1)
    age_given_occupation: Mapping[str, Mapping[str, float]]
    income_given_occupation: Mapping[str, Mapping[str, float]]
    # Each pattern: dimension -> allowed values; a cell matching every dimension is forbidden.
    forbidden: tuple[tuple[str, Mapping[str, frozenset[str]]], ...]
    source: str

    @property
    def income_ids(self) -> tuple[str, ...]:
        return tuple(b.id for b in self.income_bands)

    def income_mid(self, band: str) -> float:
        for b in self.income_bands:
            if b.id == band:
                return b.mid
        raise KeyError(band)

    def violations(self, age: str, income: str, occupation: str) -> list[str]:
        """Ids of the forbidden patterns a (age, income, occupation) cell matches."""
        cell = {"age": age, "income": income, "occupation": occupation}
        return [rid for rid, pattern in self.forbidden if all(cell[d] in vals for d, vals in pattern.items())]


@dataclass(frozen=True)
class JointCell:
    age: str
    income: str
    occupation: str
    p: float


@dataclass(frozen=True)
class Feature:
    id: str
    label: str
    synonyms: tuple[str, ...]


@dataclass(frozen=True)
class SegmentPrior:
    id: str
    name: str
    weight: float
    eligible: Mapping[str, frozenset[str]]
    needs: tuple[str, ...]
    wtp_median_usd: float
    wtp_sigma: float
    price_sensitivity: float
    innovation: float
    imitation: float
    churn_monthly: float
    brand_affinity: float
    feature_importance: Mapping[str, float]
    attributes: Mapping[str, str]

    def admits(self, cell: JointCell) -> bool:
        values = {"age": cell.age, "income": cell.income, "occupation": cell.occupation}
        return all(values[d] in allowed for d, allowed in self.eligible.items())


@dataclass(frozen=True)
class PriceSpec:
    amount: float
    currency: str
    billing_period: str
    amortisation_months: int = 0


@dataclass(frozen=True)
class ArchetypePrior:
    name: str
    kind: str
    relevance: float
    price: PriceSpec
    per_seat: bool
    seats: int
    free_tier: bool
    # (free text, coverage in [0, 1])
    features: tuple[tuple[str, float], ...]
    brand_strength: float
    market_share: float


@dataclass(frozen=True, eq=False)
class DomainPrior:
    domain: str
    label: str
    provenance: Mapping[str, str]
    synonyms: tuple[str, ...]
    keywords: tuple[str, ...]
    wtp_upper_range_usd: float
    wtp_income_elasticity: float
    features: tuple[Feature, ...]
    default_feature_importance: float
    segments: tuple[SegmentPrior, ...]
    joint: tuple[JointCell, ...]
    archetypes: tuple[ArchetypePrior, ...]
    listed_share_max: float
    default_seats: int
    demographics: Demographics
    path: str

    @property
    def source(self) -> str:
        """The `sources` tag of every parameter drawn from this prior."""
        return f"prior:{self.domain}"

    @property
    def feature_ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.features)

    def segment_table(self, segment: SegmentPrior) -> tuple[JointCell, ...]:
        """The domain's joint table restricted to the segment's eligible cells, renormalised."""
        return _segment_table(self, segment.id)

    def bands_with_mass(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        ages = {c.age for c in self.joint}
        incomes = {c.income for c in self.joint}
        return (
            tuple(a for a in self.demographics.age_bands if a in ages),
            tuple(i for i in self.demographics.income_ids if i in incomes),
        )


@functools.lru_cache(maxsize=None)
def _segment_table(prior: DomainPrior, segment_id: str) -> tuple[JointCell, ...]:
    seg = next(s for s in prior.segments if s.id == segment_id)
    cells = [c for c in prior.joint if seg.admits(c)]
    total = math.fsum(c.p for c in cells)
    return tuple(JointCell(c.age, c.income, c.occupation, c.p / total) for c in cells)


@dataclass(frozen=True)
class DomainResolution:
    domain: str
    # "idea.domain" | "keywords" | "fallback"
    method: str
    requested: str
    warnings: tuple[str, ...] = ()
    keyword_hits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


# --------------------------------------------------------------------------- text helpers


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def normalise_text(text: str) -> str:
    """Lower-case, every run of non-alphanumerics to one space ("E-Commerce" -> "e commerce")."""
    return _NON_ALNUM.sub(" ", (text or "").lower()).strip()


# British -ise / -isation spellings folded onto the American -ize forms the priors mostly list
# ("categorisation" -> "categorization"); folded on both sides of every match, so a word that only
# exists with -ise ("enterprise") still matches itself.
_BRITISH_SUFFIXES = (("isation", "ization"), ("ising", "izing"), ("ised", "ized"), ("iser", "izer"), ("ise", "ize"))


def _fold(token: str) -> str:
    """Plural and spelling folding for keyword matching ("budgets" -> "budget", "categories" ->
    "category", "categorisations" -> "categorization")."""
    if len(token) > 4 and token.endswith("ies"):
        token = token[:-3] + "y"
    elif len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        token = token[:-1]
    if len(token) > 5:
        for british, american in _BRITISH_SUFFIXES:
            if token.endswith(british):
                return token[: -len(british)] + american
    return token


def _tokens(text: str) -> list[str]:
    return [_fold(t) for t in normalise_text(text).split()]


def _contains_phrase(tokens: Sequence[str], phrase: Sequence[str]) -> bool:
    n = len(phrase)
    if n == 0 or n > len(tokens):
        return False
    first = phrase[0]
    return any(tokens[i] == first and list(tokens[i : i + n]) == list(phrase) for i in range(len(tokens) - n + 1))


# --------------------------------------------------------------------------- loading


def _fail(path: Path | str, where: str, msg: str) -> PriorDataError:
    return PriorDataError(f"{path}: {where}: {msg}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise PriorDataError(f"{path}: prior file not found") from exc
    except yaml.YAMLError as exc:
        raise PriorDataError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise PriorDataError(f"{path}: top level must be a mapping")
    return doc


def _num(path: Path, where: str, value: Any, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, where, f"expected a finite number, got {value!r}")
    v = float(value)
    if lo is not None and v < lo:
        raise _fail(path, where, f"{v} < {lo}")
    if hi is not None and v > hi:
        raise _fail(path, where, f"{v} > {hi}")
    return v


def _distribution(path: Path, where: str, raw: Any, allowed: Sequence[str]) -> dict[str, float]:
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, where, "expected a non-empty mapping band -> probability")
    out: dict[str, float] = {}
    for k, v in raw.items():
        if k not in allowed:
            raise _fail(path, f"{where}.{k}", f"unknown band (known: {list(allowed)})")
        out[k] = _num(path, f"{where}.{k}", v, lo=0.0)
    total = math.fsum(out.values())
    if total <= 0:
        raise _fail(path, where, "probabilities sum to 0")
    if abs(total - 1.0) > 0.02:
        raise _fail(path, where, f"probabilities sum to {total:.4f}, expected 1 (within 0.02)")
    return {k: v / total for k, v in out.items()}


@functools.lru_cache(maxsize=None)
def _load_demographics(directory: str) -> Demographics:
    path = Path(directory) / "demographics.yaml"
    doc = _read_yaml(path)
    ages = tuple(str(a) for a in doc.get("age_bands") or ())
    if not ages or len(set(ages)) != len(ages):
        raise _fail(path, "age_bands", "must be a non-empty list of distinct bands")
    bands = []
    for i, b in enumerate(doc.get("income_bands") or ()):
        try:
            bands.append(
                IncomeBand(str(b["id"]), float(b["low"]), None if b.get("high") is None else float(b["high"]), float(b["mid"]))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _fail(path, f"income_bands[{i}]", f"needs id, low, high, mid ({exc})") from exc
    if not bands or len({b.id for b in bands}) != len(bands):
        raise _fail(path, "income_bands", "must be a non-empty list of distinct bands")
    income_ids = tuple(b.id for b in bands)
    occs = doc.get("occupations") or {}
    if not isinstance(occs, dict) or not occs:
        raise _fail(path, "occupations", "must be a non-empty mapping")
    labels, p_age, p_inc = {}, {}, {}
    for occ, spec in occs.items():
        labels[occ] = str(spec.get("label") or occ)
        p_age[occ] = _distribution(path, f"occupations.{occ}.age", spec.get("age"), ages)
        p_inc[occ] = _distribution(path, f"occupations.{occ}.income", spec.get("income"), income_ids)
    forbidden = []
    known = {"age": set(ages), "income": set(income_ids), "occupation": set(occs)}
    for i, rule in enumerate(doc.get("forbidden") or ()):
        rid = str(rule.get("id") or f"rule{i}")
        pattern = {}
        for dim in DIMENSIONS:
            if dim in rule:
                vals = frozenset(str(v) for v in rule[dim])
                unknown = vals - known[dim]
                if unknown:
                    raise _fail(path, f"forbidden[{rid}].{dim}", f"unknown values {sorted(unknown)}")
                pattern[dim] = vals
        if len(pattern) < 2:
            raise _fail(path, f"forbidden[{rid}]", "a pattern needs at least two dimensions")
        forbidden.append((rid, pattern))
    ref = _num(path, "reference_income_usd", doc.get("reference_income_usd"), lo=1.0)
    return Demographics(ages, tuple(bands), ref, labels, p_age, p_inc, tuple(forbidden), str(path))


def load_demographics() -> Demographics:
    return _load_demographics(str(priors_dir()))


def _build_joint(path: Path, spec: Mapping[str, Any], demo: Demographics) -> tuple[JointCell, ...]:
    mix = spec.get("occupation_mix")
    if not isinstance(mix, dict) or not mix:
        raise _fail(path, "demographics.occupation_mix", "must be a non-empty mapping")
    for occ in mix:
        if occ not in demo.occupation_labels:
            raise _fail(path, f"demographics.occupation_mix.{occ}", "unknown occupation")
    age_tilt = spec.get("age_tilt") or {}
    inc_tilt = spec.get("income_tilt") or {}
    for k in age_tilt:
        if k not in demo.age_bands:
            raise _fail(path, f"demographics.age_tilt.{k}", "unknown age band")
    for k in inc_tilt:
        if k not in demo.income_ids:
            raise _fail(path, f"demographics.income_tilt.{k}", "unknown income band")
    raw: list[tuple[str, str, str, float]] = []
    for occ, w in mix.items():
        w = _num(path, f"demographics.occupation_mix.{occ}", w, lo=0.0)
        for age, pa in demo.age_given_occupation[occ].items():
            for inc, pi in demo.income_given_occupation[occ].items():
                if demo.violations(age, inc, occ):
                    continue
                p = w * pa * pi * float(age_tilt.get(age, 1.0)) * float(inc_tilt.get(inc, 1.0))
                if p > 0:
                    raw.append((age, inc, occ, p))
    total = math.fsum(r[3] for r in raw)
    if total <= 0:
        raise _fail(path, "demographics", "joint table has no mass")
    # Deterministic order: age band, income band, occupation (file order of the base table).
    a_idx = {a: i for i, a in enumerate(demo.age_bands)}
    i_idx = {b: i for i, b in enumerate(demo.income_ids)}
    o_idx = {o: i for i, o in enumerate(demo.occupation_labels)}
    raw.sort(key=lambda r: (a_idx[r[0]], i_idx[r[1]], o_idx[r[2]]))
    return tuple(JointCell(a, i, o, p / total) for a, i, o, p in raw)


def _parse_feature_entry(path: Path, where: str, entry: Any) -> tuple[str, float]:
    """A competitor feature: "text" (coverage 1), "text: 0.5", or {text: 0.5}."""
    if isinstance(entry, dict) and len(entry) == 1:
        (text, cov), = entry.items()
        return str(text), _num(path, where, cov, lo=0.0, hi=1.0)
    if isinstance(entry, str):
        m = re.fullmatch(r"(.*?):\s*([0-9]*\.?[0-9]+)\s*", entry)
        if m:
            return m.group(1).strip(), _num(path, where, float(m.group(2)), lo=0.0, hi=1.0)
        return entry.strip(), 1.0
    raise _fail(path, where, f"expected text or {{text: coverage}}, got {entry!r}")


def _load_prior_file(path: Path, demo: Demographics) -> DomainPrior:
    doc = _read_yaml(path)
    domain = str(doc.get("domain") or "")
    if domain != path.stem:
        raise _fail(path, "domain", f"{domain!r} must equal the file name {path.stem!r}")
    prov = doc.get("provenance")
    if not isinstance(prov, dict) or not all(prov.get(k) for k in ("kind", "authored", "basis", "limitations")):
        raise _fail(path, "provenance", "needs kind, authored, basis and limitations")
    det = doc.get("detection") or {}
    synonyms = tuple(dict.fromkeys(normalise_text(s) for s in (det.get("synonyms") or ()) if normalise_text(s)))
    keywords = tuple(dict.fromkeys(normalise_text(s) for s in (det.get("keywords") or ()) if normalise_text(s)))
    wtp = doc.get("wtp") or {}
    upper = _num(path, "wtp.upper_range_usd", wtp.get("upper_range_usd"), lo=0.0)
    elasticity = _num(path, "wtp.income_elasticity", wtp.get("income_elasticity", 0.0), lo=0.0, hi=2.0)

    features = []
    for i, f in enumerate(doc.get("features") or ()):
        if not isinstance(f, dict) or not f.get("id"):
            raise _fail(path, f"features[{i}]", "needs an id")
        features.append(Feature(str(f["id"]), str(f.get("label") or f["id"]), tuple(str(s) for s in f.get("synonyms") or ())))
    ids = [f.id for f in features]
    if not features or len(set(ids)) != len(ids):
        raise _fail(path, "features", "must be a non-empty list of distinct ids")
    default_imp = _num(path, "default_feature_importance", doc.get("default_feature_importance", 0.2), lo=0.0)

    joint = _build_joint(path, doc.get("demographics") or {}, demo)

    segments = []
    for i, s in enumerate(doc.get("segments") or ()):
        where = f"segments[{s.get('id', i)}]"
        eligible = {}
        for dim, vals in (s.get("eligible") or {}).items():
            if dim not in DIMENSIONS:
                raise _fail(path, f"{where}.eligible.{dim}", f"unknown dimension (known: {DIMENSIONS})")
            eligible[dim] = frozenset(str(v) for v in vals)
        fi = {}
        for k, v in (s.get("feature_importance") or {}).items():
            if k not in ids:
                raise _fail(path, f"{where}.feature_importance.{k}", "not a feature id of this domain")
            fi[k] = _num(path, f"{where}.feature_importance.{k}", v, lo=0.0)
        w = s.get("wtp") or {}
        seg = SegmentPrior(
            id=str(s.get("id") or f"segment{i}"),
            name=str(s.get("name") or s.get("id")),
            weight=_num(path, f"{where}.weight", s.get("weight"), lo=0.0),
            eligible=eligible,
            needs=tuple(str(n) for n in s.get("needs") or ()),
            wtp_median_usd=_num(path, f"{where}.wtp.median_usd", w.get("median_usd"), lo=0.0),
            wtp_sigma=_num(path, f"{where}.wtp.sigma", w.get("sigma"), lo=0.01, hi=3.0),
            price_sensitivity=_num(path, f"{where}.price_sensitivity", s.get("price_sensitivity"), lo=0.0),
            innovation=_num(path, f"{where}.innovation", s.get("innovation", 1.0), lo=0.0),
            imitation=_num(path, f"{where}.imitation", s.get("imitation", 1.0), lo=0.0),
            churn_monthly=_num(path, f"{where}.churn_monthly", s.get("churn_monthly"), lo=0.0, hi=1.0),
            brand_affinity=_num(path, f"{where}.brand_affinity", s.get("brand_affinity", 0.0)),
            feature_importance=fi,
            attributes={str(k): str(v) for k, v in (s.get("attributes") or {}).items()},
        )
        if not seg.needs:
            raise _fail(path, f"{where}.needs", "at least one need statement")
        if not any(seg.admits(c) for c in joint):
            raise _fail(path, f"{where}.eligible", "no cell of the domain's joint table is eligible")
        segments.append(seg)
    if not segments or len({s.id for s in segments}) != len(segments):
        raise _fail(path, "segments", "must be a non-empty list of distinct ids")
    if math.fsum(s.weight for s in segments) <= 0:
        raise _fail(path, "segments", "weights sum to 0")

    comp = doc.get("competitors") or {}
    default_seats = int(comp.get("default_seats", 1))
    archetypes = []
    for i, a in enumerate(comp.get("archetypes") or ()):
        where = f"competitors.archetypes[{a.get('name', i)}]"
        p = a.get("price") or {}
        price = PriceSpec(
            amount=_num(path, f"{where}.price.amount", p.get("amount"), lo=0.0),
            currency=str(p.get("currency") or "USD"),
            billing_period=str(p.get("billing_period") or "monthly"),
            amortisation_months=int(p.get("amortisation_months") or 0),
        )
        per_seat = bool(a.get("per_seat", False))
        archetypes.append(
            ArchetypePrior(
                name=str(a["name"]),
                kind=str(a.get("kind") or "competitor"),
                relevance=_num(path, f"{where}.relevance", a.get("relevance", 0.5), lo=0.0, hi=1.0),
                price=price,
                per_seat=per_seat,
                seats=int(a.get("seats", default_seats if per_seat else 1)),
                free_tier=bool(a.get("free_tier", False)) or price.amount == 0,
                features=tuple(_parse_feature_entry(path, f"{where}.features[{j}]", e) for j, e in enumerate(a.get("features") or ())),
                brand_strength=_num(path, f"{where}.brand_strength", a.get("brand_strength", 0.3), lo=0.0),
                market_share=_num(path, f"{where}.market_share", a.get("market_share", 0.0), lo=0.0, hi=1.0),
            )
        )
    if len({a.name for a in archetypes}) != len(archetypes):
        raise _fail(path, "competitors.archetypes", "names must be distinct")
    if not archetypes:
        raise _fail(path, "competitors.archetypes", "at least one archetype")
    return DomainPrior(
        domain=domain,
        label=str(doc.get("label") or domain),
        provenance={str(k): str(v) for k, v in prov.items()},
        synonyms=synonyms,
        keywords=keywords,
        wtp_upper_range_usd=upper,
        wtp_income_elasticity=elasticity,
        features=tuple(features),
        default_feature_importance=default_imp,
        segments=tuple(segments),
        joint=joint,
        archetypes=tuple(archetypes),
        listed_share_max=_num(path, "competitors.listed_share_max", comp.get("listed_share_max", 0.8), lo=0.0, hi=1.0),
        default_seats=default_seats,
        demographics=demo,
        path=str(path),
    )


@functools.lru_cache(maxsize=None)
def _load_all(directory: str) -> dict[str, DomainPrior]:
    base = Path(directory)
    demo = _load_demographics(directory)
    priors: dict[str, DomainPrior] = {}
    for path in sorted(base.glob("*.yaml")):
        if path.stem == "demographics":
            continue
        priors[path.stem] = _load_prior_file(path, demo)
    missing = [d for d in REQUIRED_DOMAINS if d not in priors]
    if missing:
        raise PriorDataError(f"{base}: missing prior files for {missing}")
    owner: dict[str, str] = {}
    for d, prior in priors.items():
        for name in (normalise_text(d), *prior.synonyms):
            if owner.get(name, d) != d:
                raise PriorDataError(f"{base}: synonym {name!r} claimed by both {owner[name]} and {d}")
            owner[name] = d
    return priors


def all_priors() -> dict[str, DomainPrior]:
    """Every domain prior, validated, keyed by domain."""
    return _load_all(str(priors_dir()))


def available_domains() -> tuple[str, ...]:
    return tuple(all_priors())


def load_prior(domain: str) -> DomainPrior:
    priors = all_priors()
    if domain not in priors:
        raise KeyError(f"no prior for domain {domain!r} (have {sorted(priors)})")
    return priors[domain]


def clear_cache() -> None:
    """Forget loaded files (tests that point SMVM_DATA_DIR elsewhere)."""
    _load_all.cache_clear()
    _load_demographics.cache_clear()
    _segment_table.cache_clear()


# --------------------------------------------------------------------------- domain resolution


@functools.lru_cache(maxsize=None)
def _synonym_index(directory: str) -> dict[str, str]:
    index = {}
    for d, prior in _load_all(directory).items():
        index[normalise_text(d)] = d
        index[normalise_text(d).replace(" ", "")] = d
        for s in prior.synonyms:
            index[s] = d
            index[s.replace(" ", "")] = d
    return index


def normalise_domain(text: str) -> str | None:
    """Canonical domain for a domain name or synonym ("FinTech" -> "finance"), else None."""
    key = normalise_text(text)
    if not key:
        return None
    index = _synonym_index(str(priors_dir()))
    return index.get(key) or index.get(key.replace(" ", ""))


def _idea_text(idea: Any) -> str:
    parts: list[str] = []
    for name in ("title", "description", "target_market", "value_proposition", "target_customers", "competitive_advantage"):
        parts.append(str(getattr(idea, name, "") or ""))
    parts.extend(str(f) for f in getattr(idea, "features", ()) or ())
    return " \n ".join(parts)


def keyword_scores(text: str) -> dict[str, tuple[str, ...]]:
    """Domain -> the keywords (and domain synonyms) found in the text; general is never scored."""
    tokens = _tokens(text)
    hits: dict[str, tuple[str, ...]] = {}
    for d, prior in all_priors().items():
        if d == FALLBACK_DOMAIN:
            continue
        found = []
        for kw in prior.keywords:
            if _contains_phrase(tokens, [_fold(t) for t in kw.split()]):
                found.append(kw)
        for syn in prior.synonyms:
            if len(syn) > 3 and _contains_phrase(tokens, [_fold(t) for t in syn.split()]):
                found.append(f"synonym:{syn}")
        if found:
            hits[d] = tuple(dict.fromkeys(found))
    return hits


def _score(found: Iterable[str]) -> int:
    return sum(SYNONYM_IN_TEXT_SCORE if f.startswith("synonym:") else 1 for f in found)


def resolve_domain(idea: Any) -> DomainResolution:
    """Which prior an idea gets: idea.domain through synonyms, else keywords, else general (with a warning)."""
    requested = str(getattr(idea, "domain", "") or "").strip() if idea is not None else ""
    direct = normalise_domain(requested) if requested else None
    if direct:
        return DomainResolution(direct, "idea.domain", requested)
    text = _idea_text(idea) if idea is not None else ""
    if requested:
        text = requested + " \n " + text
    hits = keyword_scores(text)
    ranked = sorted(((_score(f), d) for d, f in hits.items()), key=lambda t: (-t[0], t[1]))
    warnings: list[str] = []
    if ranked and ranked[0][0] >= MIN_KEYWORD_SCORE and (len(ranked) == 1 or ranked[0][0] > ranked[1][0]):
        domain = ranked[0][1]
        if requested:
            warnings.append(
                f"domain:unrecognised: idea.domain {requested!r} is not a known domain; "
                f"detected {domain!r} from keywords {list(hits[domain])}"
            )
        return DomainResolution(domain, "keywords", requested, tuple(warnings), hits)
    why = f"idea.domain {requested!r} is not a known domain" if requested else "idea.domain is empty"
    if ranked and ranked[0][0] >= MIN_KEYWORD_SCORE:
        tied = [d for s, d in ranked if s == ranked[0][0]]
        why += f" and keywords are ambiguous between {tied}"
    elif ranked:
        why += f" and keywords are too weak ({ {d: list(f) for d, f in hits.items()} })"
    else:
        why += " and no domain keywords were found"
    warnings.append(f"prior:fallback_general: {why}; using the general prior (wide, generic assumptions)")
    return DomainResolution(FALLBACK_DOMAIN, "fallback", requested, tuple(warnings), hits)


def prior_for_idea(idea: Any) -> tuple[DomainPrior, DomainResolution]:
    resolution = resolve_domain(idea)
    return load_prior(resolution.domain), resolution


# --------------------------------------------------------------------------- feature taxonomy mapping

# Words that carry no feature meaning ("ratings and reviews" ~ "ratings reviews").
_STOP_WORDS = frozenset({"a", "an", "and", "the", "of", "for", "with", "in", "on", "to", "or", "your", "by"})
# Token-set Jaccard a free-text feature needs with a canonical phrase to map by similarity.
MIN_FEATURE_SIMILARITY = 0.5


@dataclass(frozen=True)
class FeatureMatch:
    """Where one free-text feature landed on a domain's canonical taxonomy."""

    text: str
    # Canonical feature id, or None when unmapped.
    feature: str | None
    # "synonym" (exact phrase: id, label or synonym) | "similarity" (token Jaccard) | "unmapped"
    method: str
    score: float


def _feature_stem(token: str) -> str:
    """A feature's activity and its agent or object match ("coaching" ~ "coach", "budgeting" ~
    "budget"): -ing is dropped from words long enough to keep a stem of four letters or more."""
    return token[:-3] if len(token) >= 7 and token.endswith("ing") else token


def _feature_key(text: str) -> tuple[str, ...]:
    return tuple(_feature_stem(t) for t in _tokens(text) if t not in _STOP_WORDS)


@functools.lru_cache(maxsize=None)
def _feature_phrases(prior: DomainPrior) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(feature id, key) for every id, label and synonym, in taxonomy order."""
    out = []
    for f in prior.features:
        for phrase in (f.id.replace("_", " "), f.label, *f.synonyms):
            key = _feature_key(phrase)
            if key:
                out.append((f.id, key))
    return tuple(out)


def map_feature(prior: DomainPrior, text: str, *, min_similarity: float = MIN_FEATURE_SIMILARITY) -> FeatureMatch:
    """Map free text onto the prior's taxonomy: exact phrase first, else best token-set Jaccard.

    Ties go to the feature listed first in the prior file; below `min_similarity` the feature is
    reported unmapped (never silently dropped, never forced onto the nearest id).
    """
    key = _feature_key(text)
    if not key:
        return FeatureMatch(text, None, "unmapped", 0.0)
    phrases = _feature_phrases(prior)
    for fid, phrase in phrases:
        if phrase == key:
            return FeatureMatch(text, fid, "synonym", 1.0)
    tokens = set(key)
    best_id, best = None, 0.0
    for fid, phrase in phrases:
        other = set(phrase)
        score = len(tokens & other) / len(tokens | other)
        if score > best:
            best_id, best = fid, score
    if best_id is not None and best >= min_similarity:
        return FeatureMatch(text, best_id, "similarity", round(best, 6))
    return FeatureMatch(text, None, "unmapped", round(best, 6))


def features_in_text(prior: DomainPrior, text: str) -> tuple[tuple[str, str], ...]:
    """(feature id, phrase found) for each canonical feature named in free text, in taxonomy order.

    Used when an idea lists no features: its description may still name them ("... with Slack
    integration and dashboards"). Only exact phrases count (id, label or synonym), no similarity.
    """
    tokens = [t for t in _tokens(text) if t not in _STOP_WORDS]
    found: dict[str, str] = {}
    for fid, key in _feature_phrases(prior):
        if fid not in found and _contains_phrase(tokens, list(key)):
            found[fid] = " ".join(key)
    return tuple(found.items())
