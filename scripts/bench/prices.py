"""The bench's price table: shipped defaults (``prices.yaml``) plus an optional override file.

Prices are per resource (vCPU-hour, GiB-hour) per machine family and region, each with
where the figure comes from and when it was taken, so a report can say what its dollars
rest on. An override file (``--prices FILE``) has the same format with every top-level
key optional: its (family, region) entries replace the shipped ones and add new ones; it
may change ``version`` and the cluster fee. Family names match case-insensitively; region
``"*"`` matches any region (used for ``local``, this machine, which is in none).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scripts.errors import ConfigError
from scripts.model_spec import validation_problems

SHIPPED_PRICES = Path(__file__).with_name("prices.yaml")
ANY_REGION = "*"
_M = TypeVar("_M", bound=BaseModel)
FORMAT_HINT = (
    "families: {E2: {us-central1: {vcpu_hour, gib_hour, source, date}}} "
    "(see scripts/bench/prices.yaml)"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class PriceEntry(_Strict):
    """What one vCPU and one GiB cost an hour in one family and region, and on what authority."""

    vcpu_hour: float = Field(ge=0)
    gib_hour: float = Field(ge=0)
    source: str = Field(min_length=1)
    date: datetime.date


class PriceTable(_Strict):
    """The prices a bench run uses; ``override`` names the file merged in, if any."""

    version: str = Field(min_length=1)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    cluster_fee_per_hour: float = Field(ge=0)
    cluster_fee_source: str = Field(min_length=1)
    families: dict[str, dict[str, PriceEntry]]
    override: str | None = None

    def _family_key(self, family: str) -> str | None:
        wanted = family.casefold()
        return next((key for key in self.families if key.casefold() == wanted), None)

    def lookup(self, family: str, region: str) -> tuple[str, str, PriceEntry]:
        """The (family, region) keys that price ``family`` in ``region``, and the entry.

        The region's own entry, else the family's ``"*"`` entry. Raises ConfigError naming
        the families, or the family's regions, that exist.
        """
        key = self._family_key(family)
        if key is None:
            raise ConfigError(
                f"the price table (version {self.version}) has no machine family {family!r}",
                cause="the overlay's machine family is not priced",
                fix=(
                    f"use one of: {', '.join(sorted(self.families))}, or add it in a "
                    f"--prices file ({FORMAT_HINT})"
                ),
            )
        regions = self.families[key]
        for candidate in (region, ANY_REGION):
            if candidate in regions:
                return key, candidate, regions[candidate]
        raise ConfigError(
            f"the price table (version {self.version}) has no {key} prices for region {region!r}",
            cause="the region is not priced for that machine family",
            fix=(
                f"pass --region one of: {', '.join(sorted(regions))}, or add "
                f"{key}/{region} in a --prices file"
            ),
        )

    def price(self, family: str, region: str) -> PriceEntry:
        """The entry for ``family`` in ``region``; ConfigError (see ``lookup``) without one."""
        return self.lookup(family, region)[2]

    def to_dict(self, used: Iterable[tuple[str, str]] | None = None) -> dict[str, Any]:
        """The table as the report records it: every entry, or only the ``used`` ones."""
        if used is None:
            keys = [
                (family, region) for family, regions in self.families.items() for region in regions
            ]
        else:
            keys = sorted({self.lookup(family, region)[:2] for family, region in used})
        return {
            "version": self.version,
            "currency": self.currency,
            "cluster_fee_per_hour": self.cluster_fee_per_hour,
            "cluster_fee_source": self.cluster_fee_source,
            "override": self.override,
            "entries": [
                _entry_dict(family, region, self.families[family][region])
                for family, region in keys
            ],
        }


def _entry_dict(family: str, region: str, entry: PriceEntry) -> dict[str, Any]:
    return {
        "family": family,
        "region": region,
        "vcpu_hour": entry.vcpu_hour,
        "gib_hour": entry.gib_hour,
        "source": entry.source,
        "date": entry.date.isoformat(),
    }


class _PriceOverride(_Strict):
    """An override file: the table's format with every top-level key optional."""

    version: str | None = Field(None, min_length=1)
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$")
    cluster_fee_per_hour: float | None = Field(None, ge=0)
    cluster_fee_source: str | None = Field(None, min_length=1)
    families: dict[str, dict[str, PriceEntry]] = Field(default_factory=dict)


def _read_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{what} {path} does not exist",
            cause="a wrong --prices path" if what == "price override file" else "a broken install",
            fix="pass the path of a YAML price file (see scripts/bench/prices.yaml)",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}", fix="check the file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{what} {path} is not valid YAML: {exc}",
            cause="a syntax error in the file",
            fix="fix the YAML syntax at the position shown",
        ) from exc


def _validate(model: type[_M], raw: Any, path: Path, what: str) -> _M:
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{what} {path} is not a mapping",
            cause="the file is empty or holds a list or a scalar",
            fix=FORMAT_HINT,
        )
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{what} {path} is invalid: {validation_problems(exc)}",
            cause="a missing, misspelt or out-of-range field",
            fix=FORMAT_HINT,
        ) from exc


def _merge(base: PriceTable, override: _PriceOverride, path: Path) -> PriceTable:
    if override.currency and override.currency != base.currency:
        raise ConfigError(
            f"price override file {path} is in {override.currency}, the shipped table in "
            f"{base.currency}",
            cause="mixing currencies would make the costs incomparable",
            fix=f"give every price in {base.currency} (or drop the currency key)",
        )
    families = {family: dict(regions) for family, regions in base.families.items()}
    for family, regions in override.families.items():
        key = base._family_key(family) or family
        families.setdefault(key, {}).update(regions)
    return PriceTable(
        version=override.version or f"{base.version}+{path.name}",
        currency=base.currency,
        cluster_fee_per_hour=(
            base.cluster_fee_per_hour
            if override.cluster_fee_per_hour is None
            else override.cluster_fee_per_hour
        ),
        cluster_fee_source=override.cluster_fee_source
        or (
            base.cluster_fee_source
            if override.cluster_fee_per_hour is None
            else f"set by {path.name}"
        ),
        families=families,
        override=str(path),
    )


def load_prices(override: Path | None = None) -> PriceTable:
    """The shipped price table, with ``override``'s entries merged in (replace or add).

    Raises ConfigError for a missing, unreadable or invalid file (either one), or an
    override in another currency.
    """
    shipped = _read_yaml(SHIPPED_PRICES, "price table")
    table = _validate(PriceTable, shipped, SHIPPED_PRICES, "price table")
    if override is None:
        return table
    extra = _validate(
        _PriceOverride, _read_yaml(override, "price override file"), override, "price override file"
    )
    return _merge(table, extra, override)
