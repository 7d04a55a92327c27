"""Two bench runs side by side: what changed in the configuration, per overlay, and the winner.

Both inputs are ``bench.json`` dicts (``BenchResult.to_dict()``). A change in capacity or
in $/1M counts as *significant* when it is larger than the two runs' spreads together
(the spread is the relative uncertainty of an overlay's capacity, which $/1M inherits);
otherwise it is *within spread*. p99 and throttling at capacity are shown with their
change but not judged: the runs measure no uncertainty for them, and they are read at
each run's own capacity, which may be a different rate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scripts.bench.results import SCHEMA
from scripts.errors import ConfigError

_VALUE_LIMIT = 80  # characters of a config value shown in a difference


def _check_schema(data: dict[str, Any], which: str) -> None:
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema != SCHEMA:
        raise ConfigError(
            f"the {which} file is not a bench result: schema {schema!r}, expected {SCHEMA!r}",
            cause="a file from another command, or from an incompatible version of bench",
            fix="pass the bench.json files that `python -m scripts bench` wrote",
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _VALUE_LIMIT else text[: _VALUE_LIMIT - 1] + "…"


def config_differences(old: Any, new: Any, path: str = "config") -> list[str]:
    """``path: old → new`` for every leaf that differs (dicts walked key by key)."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{path}.{key}"
            if key not in old:
                lines.append(f"{where}: added ({_short(new[key])})")
            elif key not in new:
                lines.append(f"{where}: removed (was {_short(old[key])})")
            else:
                lines += config_differences(old[key], new[key], where)
        return lines
    return [] if old == new else [f"{path}: {_short(old)} → {_short(new)}"]


def _relative(old: float | None, new: float | None) -> float | None:
    if old is None or new is None or old == 0:
        return None
    return (new - old) / old


def _judge(change: float | None, spread: float) -> str:
    if change is None:
        return ""
    return "significant" if abs(change) > spread else "within spread"


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}{unit}" if abs(value) >= 1000 else f"{value:.4g}{unit}"


def _dollars(value: float | None) -> str:
    return "—" if value is None else f"${value:.4g}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _metric_line(
    label: str,
    old: float | None,
    new: float | None,
    show: Callable[[float | None], str],
    spread: float | None,
) -> str:
    """One metric's ``old → new (±change, verdict)``; ``spread`` None: not judged."""
    change = _relative(old, new)
    parts = []
    if change is not None:
        parts.append(f"{change:+.1%}")
    if spread is not None and change is not None:
        parts.append(f"{_judge(change, spread)}, combined spread ±{spread:.1%}")
    tail = f" ({'; '.join(parts)})" if parts else ""
    return f"  {label}: {show(old)} → {show(new)}{tail}"


def _throttled_line(old: float | None, new: float | None) -> str:
    """Throttling compared in percentage points: a relative change from 0 % means nothing."""
    if old is None or new is None:
        return f"  throttled: {_ratio(old)} → {_ratio(new)}"
    return f"  throttled: {_ratio(old)} → {_ratio(new)} ({(new - old) * 100:+.1f} points)"


def _overlay_lines(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    spread = (old.get("spread") or 0.0) + (new.get("spread") or 0.0)
    lines = [f"- {new['name']}:"]
    for run, row in (("old", old), ("new", new)):
        if row.get("error"):
            lines.append(f"  {run} run failed: {row['error']}")
    lines += [
        _metric_line(
            "capacity (req/s)",
            old.get("capacity_rps"),
            new.get("capacity_rps"),
            _fmt,
            spread,
        ),
        _metric_line("p99 at capacity (ms)", old.get("p99_ms"), new.get("p99_ms"), _fmt, None),
        _metric_line(
            "$/1M",
            old.get("cost_per_million"),
            new.get("cost_per_million"),
            _dollars,
            spread,
        ),
        _throttled_line(old.get("throttled_ratio"), new.get("throttled_ratio")),
    ]
    return lines


def _by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in data.get("overlays", [])}


def _config_section(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    old_digest, new_digest = old.get("config_digest", ""), new.get("config_digest", "")
    if old_digest and old_digest == new_digest:
        return [f"Configuration: same (digest {new_digest[:12]})."]
    lines = [
        f"Configuration: different (digest {old_digest[:12] or '?'} → {new_digest[:12] or '?'})."
    ]
    differences = config_differences(old.get("config", {}), new.get("config", {}))
    lines += [f"  {line}" for line in differences] or [
        "  (the recorded configurations are equal: the digests were computed differently)"
    ]
    return lines


def _prices_section(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    old_version = (old.get("prices") or {}).get("version")
    new_version = (new.get("prices") or {}).get("version")
    if old_version == new_version:
        return []
    return [f"Prices: table {old_version} → {new_version}: $/1M changes include price changes."]


def _winner_section(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    before, after = old.get("winner"), new.get("winner")
    if before == after:
        return [f"Winner: unchanged ({after or 'none'})."]
    return [
        f"Winner: {before or 'none'} → {after or 'none'}.",
        f"  now: {new.get('winner_note', '')}",
    ]


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What changed between two bench results, as readable text.

    Raises ConfigError when either is not a ``tf-release-pipeline/bench/v1`` result.
    """
    _check_schema(old, "old")
    _check_schema(new, "new")
    lines = [
        f"Bench {old.get('model')} ({old.get('target')}) → "
        f"{new.get('model')} ({new.get('target')})",
        *_config_section(old, new),
        *_prices_section(old, new),
        "",
        "Overlays (significance judged for capacity and $/1M, against both runs' spreads):",
    ]
    old_rows, new_rows = _by_name(old), _by_name(new)
    for name in [n for n in new_rows if n in old_rows]:
        lines += _overlay_lines(old_rows[name], new_rows[name])
    added = [n for n in new_rows if n not in old_rows]
    removed = [n for n in old_rows if n not in new_rows]
    if added:
        lines.append(f"Added: {', '.join(added)}")
    if removed:
        lines.append(f"Removed: {', '.join(removed)}")
    lines += ["", *_winner_section(old, new)]
    return "\n".join(lines) + "\n"
