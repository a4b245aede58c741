"""Paired comparison of two methods over the same seeds: mean difference, 95% t interval, paired t-test.

Two rows of the `lungsound compare` table (A and B) were each run over several seeds. Seed s of A and seed s of B share
what the seed fixes (the initialisation of new layers, the data order, the augmentation draws), so the comparison
pairs them: only seeds present in both rows count, and the seeds found in one row only are reported, never silently
used. With the per-seed differences d_i = a_i - b_i over the n common seeds (Student's paired t-test, e.g. Montgomery,
*Design and Analysis of Experiments*, section 2.5.1):

    mean difference   d̄ = (1/n) Σ d_i
    std of the d_i    s_d = sqrt( Σ (d_i - d̄)² / (n - 1) )          (the sample std, ddof=1)
    standard error    SE = s_d / sqrt(n)
    t statistic       t = d̄ / SE, with df = n - 1 degrees of freedom
    95% interval      d̄ ± t_{0.975, n-1} · SE                        (t_{0.975, n-1} = scipy.stats.t.ppf(0.975, n - 1))
    p-value           p = 2 · P(T_{n-1} ≥ |t|)                       (two-sided; equals scipy.stats.ttest_rel(a, b))

Edge cases give numbers with a note, not NaN surprises: no common seed, or one (n < 2: no std, interval or test; d̄ is
still given for n = 1); differences that are all equal (s_d = 0: the interval collapses to d̄, and t = 0, p = 1 when
d̄ = 0, else t = ±inf, p = 0: the test's model of seed-to-seed variation does not hold, and the note says so); a NaN
score in a common seed makes that metric's statistics NaN, with a note naming the seeds. The p-values of the several
metrics are each a separate test, not corrected for multiple comparisons.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from lungsound.errors import LungsoundError
from lungsound.results.rows import METRICS, row_name, seed_order
from lungsound.storage import atomic_write_json, atomic_write_text

CONFIDENCE = 0.95
LABELS = {"score": "Score", "se": "Se", "sp": "Sp", **{k: f"acc {k[4:]}" for k in METRICS if k.startswith("acc_")}}
ORDER = ["score", "se", "sp"] + [k for k in METRICS if k.startswith("acc_")]


@dataclass
class PairedStats:
    """The paired comparison of A and B on one metric; `note` says why a number is missing or degenerate."""

    n: int
    seeds: list[str]
    only_a: list[str]
    only_b: list[str]
    mean_a: float
    mean_b: float
    mean_diff: float
    sd_diff: float
    ci_low: float
    ci_high: float
    t: float
    df: int
    p: float
    confidence: float = CONFIDENCE
    notes: list[str] = field(default_factory=list)


def paired_stats(a: dict[str, float], b: dict[str, float], confidence: float = CONFIDENCE) -> PairedStats:
    """Pair the per-seed scores `a` and `b` (seed -> score) on their common seeds; A - B, see the module docstring."""
    seeds = sorted(set(a) & set(b), key=seed_order)
    only_a = sorted(set(a) - set(b), key=seed_order)
    only_b = sorted(set(b) - set(a), key=seed_order)
    n, nan = len(seeds), float("nan")
    out = PairedStats(n, seeds, only_a, only_b, nan, nan, nan, nan, nan, nan, nan, max(n - 1, 0), nan, confidence)
    if only_a or only_b:
        out.notes.append(f"seeds only in A: {', '.join(only_a) or 'none'}; only in B: {', '.join(only_b) or 'none'} "
                         "(left out of the pairing)")
    if n == 0:
        out.notes.append("no seed in common: nothing to pair")
        return out
    xa = np.array([a[s] for s in seeds], dtype=float)
    xb = np.array([b[s] for s in seeds], dtype=float)
    bad = [s for s, u, v in zip(seeds, xa, xb) if math.isnan(u) or math.isnan(v)]
    if bad:
        out.notes.append(f"NaN score in seed(s) {', '.join(bad)}: no comparison")
        return out
    d = xa - xb
    out.mean_a, out.mean_b, out.mean_diff = float(xa.mean()), float(xb.mean()), float(d.mean())
    if n < 2:
        out.notes.append(f"only {n} common seed: no std, interval or test (they need at least 2)")
        return out
    sd = float(np.std(d, ddof=1))
    se = sd / math.sqrt(n)
    if sd <= 1e-9 * max(1.0, float(np.abs(d).max())):  # every seed differs by the same amount (up to rounding)
        out.sd_diff, out.ci_low, out.ci_high = 0.0, out.mean_diff, out.mean_diff
        if out.mean_diff == 0.0:
            out.t, out.p = 0.0, 1.0
            out.notes.append("A and B score the same on every common seed: difference 0, t = 0, p = 1")
        else:
            out.t, out.p = math.copysign(math.inf, out.mean_diff), 0.0
            out.notes.append(f"A - B is {out.mean_diff:.4g} on every common seed (no variation): t is infinite and p "
                             "is 0 only formally; the t-test's model does not hold, look at the seeds")
        return out
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    out.sd_diff, out.ci_low, out.ci_high = sd, out.mean_diff - half, out.mean_diff + half
    out.t = out.mean_diff / se
    out.p = float(2 * stats.t.sf(abs(out.t), n - 1))
    return out


def find_row(table: list[dict], name: str, which: str = "A") -> dict:
    """The row of the compare table named `name`: its experiment as shown in the table, optionally `:PROTOCOL`."""
    shown = sorted({f"{row_name(r)}:{r['protocol']}" for r in table})

    def matches(label: str, protocol: str | None) -> list[dict]:
        return [r for r in table if label in (row_name(r), r["experiment"])
                and (protocol is None or r["protocol"] == protocol)]

    found = []
    head, sep, tail = name.rpartition(":")
    if sep and tail in {r["protocol"] for r in table}:
        found = matches(head, tail)
    if not found:
        found = matches(name, None)
    if not found:
        raise LungsoundError(f"--paired {which}: no row {name!r} in the comparison table; rows: {'; '.join(shown)}")
    if len(found) > 1:
        labels = [f"{row_name(r)}:{r['protocol']}" + (f" (MLflow experiment {r['mlflow_experiment']})"
                                                      if len({x['mlflow_experiment'] for x in found}) > 1 else "")
                  for r in found]
        raise LungsoundError(f"--paired {which}: {name!r} matches {len(found)} rows: {'; '.join(labels)}; name one "
                             "as shown (NAME:PROTOCOL, with its [variant]), or pick one MLflow experiment with "
                             "--experiment")
    return found[0]


def _num(x: float, digits: int = 2) -> str:
    return "NaN" if math.isnan(x) else ("inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:.{digits}f}")


def _p(p: float) -> str:
    return "NaN" if math.isnan(p) else f"{p:.2g}" if p < 0.001 else f"{p:.4f}"


def _finite(x):
    return x if not isinstance(x, float) or math.isfinite(x) else None


@dataclass
class PairedReport:
    """The paired comparison of two rows on every metric, as Markdown and as a JSON-ready dict."""

    a: dict
    b: dict
    results: dict[str, PairedStats]
    markdown: str
    data: dict

    def write(self, out: str | Path) -> list[Path]:
        """`paired-<A>-vs-<B>.md` and `.json` in `out`, each written atomically."""
        slug = lambda r: re.sub(r"[^A-Za-z0-9._-]+", "_", f"{row_name(r)}-{r['protocol']}").strip("_")  # noqa: E731
        stem = Path(out) / f"paired-{slug(self.a)}-vs-{slug(self.b)}"
        return [atomic_write_text(stem.with_suffix(".md"), self.markdown + "\n"),
                atomic_write_json(stem.with_suffix(".json"), self.data, allow_nan=False)]


def _side(row: dict) -> dict:
    return {"row": f"{row_name(row)}:{row['protocol']}", "experiment": row["experiment"],
            "variant": row.get("variant", ""), "protocol": row["protocol"], "mlflow_experiment": row["mlflow_experiment"],
            "data": row["data"], "seeds": sorted(row["_per_seed"], key=seed_order)}


def paired_report(table: list[dict], name_a: str, name_b: str, confidence: float = CONFIDENCE) -> PairedReport:
    """Compare the rows named `name_a` and `name_b` (see `find_row`) seed by seed on every metric, A - B."""
    a, b = find_row(table, name_a, "A"), find_row(table, name_b, "B")
    if a is b:
        raise LungsoundError(f"--paired: A and B are the same row ({row_name(a)}:{a['protocol']})")
    results = {k: paired_stats({s: v[k] for s, v in a["_per_seed"].items()},
                               {s: v[k] for s, v in b["_per_seed"].items()}, confidence) for k in ORDER}
    first = results["score"]
    level = f"{100 * confidence:g}%"
    lines = [f"Paired comparison, A = {row_name(a)} ({a['protocol']}) vs B = {row_name(b)} ({b['protocol']}): "
             f"n = {first.n} common seeds ({', '.join(first.seeds) or 'none'})", "",
             f"| metric | n | mean A | mean B | mean A - B | {level} CI | t | p |", "|" + "---|" * 8]
    for k, r in results.items():
        lines.append(f"| {LABELS[k]} | {r.n} | {_num(r.mean_a)} | {_num(r.mean_b)} | {_num(r.mean_diff)} | "
                     f"[{_num(r.ci_low)}, {_num(r.ci_high)}] | {_num(r.t)} | {_p(r.p)} |")
    lines += ["", f"Per common seed d = A - B; {level} t interval d̄ ± t(df) · s_d / √n and two-sided paired t-test "
              "(df = n - 1), with s_d the sample std of the differences (ddof=1). Each metric is its own test "
              "(no correction for multiple comparisons)."]
    if not math.isnan(first.ci_low):
        verdict = ("the interval excludes 0: A scores " + ("higher" if first.ci_low > 0 else "lower") + " than B"
                   if first.ci_low > 0 or first.ci_high < 0 else "the interval includes 0: no difference shown")
        lines.append(f"Score: A - B = {_num(first.mean_diff)} ({level} CI {_num(first.ci_low)} to "
                     f"{_num(first.ci_high)}, t = {_num(first.t)}, df = {first.df}, p = {_p(first.p)}, "
                     f"n = {first.n} seeds); {verdict}.")
    common = [n for n in first.notes if all(n in r.notes for r in results.values())]  # said once, not per metric
    notes = common + [f"{LABELS[k]}: {n}" for k, r in results.items() for n in r.notes if n not in common]
    if a["data"] != b["data"]:
        notes.append(f"A and B were trained and tested on different data (fingerprints {a['data']}, {b['data']}): "
                     "the pairing is by seed only")
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    data = {"a": _side(a), "b": _side(b), "confidence": confidence, "difference": "A - B",
            "test": "paired t-test, two-sided (scipy.stats.ttest_rel); interval: Student t, sd of differences ddof=1",
            "metrics": {k: {key: (_finite(v) if not isinstance(v, list) else v) for key, v in asdict(r).items()}
                        for k, r in results.items()}}
    return PairedReport(a, b, results, "\n".join(lines), data)
