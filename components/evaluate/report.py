"""The evaluation report: one self-contained HTML page (no scripts, no external files, so it renders in the
Vertex console's HTML artifact viewer and in a local browser) and the per-example divergence table.

* metric table: candidate and every baseline side by side, with the paired bootstrap CI of the
  difference candidate − baseline for the per-example metrics;
* gate verdicts, each with its numbers and its reason in words;
* the confusion matrix (classification) or the per-field match chart (structured);
* divergences: per example, input, expected, candidate and baseline answers, which fields differ, and
  whether the candidate is right where a baseline is wrong (a win) or wrong where it is right (a loss);
  the top divergences are summarised (losses first).
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRIMARY = {"structured": "exact_match", "classification": "accuracy", "generation": "rouge_l"}


@dataclass
class Evaluated:
    """One scored model (or baseline): its metrics and its predictions table (components/evaluate/core.py)."""

    name: str
    metrics: dict[str, float]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(
        cls, name: str, metrics: dict, predictions_path: str | Path, settings: dict | None = None
    ) -> Evaluated:
        import pyarrow.parquet as pq

        path = Path(predictions_path)
        rows = pq.read_table(str(path)).to_pylist() if path.is_file() and path.stat().st_size else []
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        return cls(name, values, rows, settings or {})

    def per_example(self) -> dict[str, list[float]]:
        if not self.predictions:
            return {}
        keys = [k for k in self.predictions[0] if k.startswith("score/")]
        return {k.removeprefix("score/"): [float(r[k]) for r in self.predictions] for k in keys}


def divergences(candidate: Evaluated, baselines: list[Evaluated], task_type: str) -> list[dict[str, Any]]:
    """Per example: the answers side by side and how the candidate fares against each baseline."""
    primary = f"score/{PRIMARY[task_type]}"
    usable = [b for b in baselines if len(b.predictions) == len(candidate.predictions)]
    rows = []
    for i, row in enumerate(candidate.predictions):
        out = {
            "id": row["id"],
            "prompt": row["prompt"],
            "expected": row["expected"],
            "candidate": row["predicted"],
            "candidate_score": float(row[primary]),
            "fields_differing": row["fields_differing"],
        }
        for b in usable:
            other = b.predictions[i]
            if other["id"] != row["id"]:
                raise ValueError(f"{b.name} predictions are not in the candidate's row order at row {i}")
            delta = float(row[primary]) - float(other[primary])
            out[b.name] = other["predicted"]
            out[f"{b.name}_score"] = float(other[primary])
            out[f"vs_{b.name}"] = "win" if delta > 0 else "loss" if delta < 0 else "tie"
        rows.append(out)
    return rows


def write_divergences(rows: list[dict[str, Any]], path: str | Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), str(path))


def summary(rows: list[dict[str, Any]], baselines: list[str]) -> dict[str, Any]:
    """Wins, losses and ties per baseline, and the fields the candidate gets wrong most often."""
    out: dict[str, Any] = {}
    for name in baselines:
        counts = Counter(r.get(f"vs_{name}") for r in rows if f"vs_{name}" in r)
        if counts:
            out[name] = {k: counts.get(k, 0) for k in ("win", "loss", "tie")}
    fields = Counter(f for r in rows for f in json.loads(r["fields_differing"]))
    out["fields_wrong"] = fields.most_common(10)
    return out


# -- HTML ------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#202124}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #dadce0;padding:4px 8px;font-size:13px;text-align:left;vertical-align:top}
th{background:#f1f3f4}.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#137333;font-weight:600}.fail{color:#c5221f;font-weight:600}.skipped{color:#80868b}
pre{white-space:pre-wrap;margin:0;font-size:12px;max-width:480px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def metric_rows(
    candidate: Evaluated, baselines: list[Evaluated], resamples: int, seed: int, confidence: float = 0.95
) -> list[dict]:
    """Every metric of the candidate with each baseline's value and the paired bootstrap CI of the
    difference (components/gate/bootstrap.py, the gate's own bootstrap)."""
    from components.gate.bootstrap import paired_bootstrap

    cand_pe = candidate.per_example()
    rows = []
    for metric in sorted(k for k in candidate.metrics if k not in ("examples", "available")):
        row = {"metric": metric, "candidate": candidate.metrics[metric], "baselines": {}}
        for b in baselines:
            value = b.metrics.get(metric)
            ci = None
            base_pe = b.per_example()
            if metric in cand_pe and metric in base_pe and len(cand_pe[metric]) == len(base_pe[metric]):
                ci = paired_bootstrap(cand_pe[metric], base_pe[metric], resamples, seed, confidence)
            row["baselines"][b.name] = (value, ci)
        rows.append(row)
    return rows


def _metric_table(rows: list[dict], names: list[str], confidence: float) -> str:
    head = "".join(f"<th>{_e(n)}</th><th>candidate − {_e(n)} [{confidence:.0%} CI]</th>" for n in names)
    body = []
    for row in rows:
        cells = [f"<td>{_e(row['metric'])}</td><td class=num>{_num(row['candidate'])}</td>"]
        for n in names:
            value, ci = row["baselines"].get(n, (None, None))
            diff = f"{ci[0]:+.4f} [{ci[1]:+.4f}, {ci[2]:+.4f}]" if ci else "–"
            cells.append(f"<td class=num>{_num(value)}</td><td class=num>{diff}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr><th>metric</th><th>candidate</th>{head}</tr>{''.join(body)}</table>"


def _verdict_table(verdicts: list[dict]) -> str:
    if not verdicts:
        return "<p>No gate rules.</p>"
    rows = "".join(
        f"<tr><td class={_e(v.get('status', 'pass'))}>{_e(v.get('status', ''))}</td><td>{_e(v.get('sentence', ''))}</td></tr>"
        for v in verdicts
    )
    return f"<table><tr><th>verdict</th><th>rule and numbers</th></tr>{rows}</table>"


def _confusion_table(categories: list[str], matrix: list[list[int]]) -> str:
    peak = max((max(r) for r in matrix if r), default=1) or 1
    head = "".join(f"<th>{_e(c)}</th>" for c in categories)
    body = []
    for label, row in zip(categories, matrix, strict=True):
        cells = "".join(
            f"<td class=num style='background:rgba(26,115,232,{0.85 * v / peak:.2f})'>{v}</td>" for v in row
        )
        body.append(f"<tr><th>{_e(label)}</th>{cells}</tr>")
    return f"<table><tr><th>expected ↓ / predicted →</th>{head}</tr>{''.join(body)}</table>"


def _field_chart(candidate: Evaluated, baselines: list[Evaluated]) -> str:
    """Horizontal bars (inline SVG) of field_match/<field>, candidate and baselines."""
    fields = sorted(k for k in candidate.metrics if k.startswith("field_match/"))
    if not fields:
        return ""
    series = [candidate, *baselines]
    colors = ["#1a73e8", "#e37400", "#188038", "#a142f4"]
    bar, gap, width, label_w = 10, 8, 320, 170
    height = len(fields) * (len(series) * bar + gap) + 30
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{label_w + width + 60}' height='{height}'>"]
    y = 0
    for f in fields:
        parts.append(f"<text x='0' y='{y + bar}' font-size='11'>{_e(f.removeprefix('field_match/'))}</text>")
        for k, s in enumerate(series):
            value = s.metrics.get(f, 0.0)
            parts.append(
                f"<rect x='{label_w}' y='{y}' width='{width * value:.1f}' height='{bar - 1}' fill='{colors[k % 4]}'/>"
                f"<text x='{label_w + width * value + 4:.1f}' y='{y + bar - 1}' font-size='10'>{value:.2f}</text>"
            )
            y += bar
        y += gap
    legend = " ".join(f"<tspan fill='{colors[k % 4]}'>■ {_e(s.name)}</tspan>" for k, s in enumerate(series))
    parts.append(f"<text x='{label_w}' y='{y + 14}' font-size='11'>{legend}</text></svg>")
    return "".join(parts)


def _divergence_table(rows: list[dict], baselines: list[str], limit: int) -> str:
    def rank(r: dict) -> tuple:
        losses = sum(r.get(f"vs_{b}") == "loss" for b in baselines)
        return (-losses, r["candidate_score"])

    shown = sorted((r for r in rows if r["candidate_score"] < 1.0), key=rank)[:limit]
    if not shown:
        return "<p>The candidate answered every example exactly right.</p>"
    head = "".join(f"<th>{_e(b)}</th>" for b in baselines)
    body = []
    for r in shown:
        others = "".join(
            f"<td><pre>{_e(r.get(b, ''))}</pre>{_e(r.get(f'vs_{b}', ''))}</td>" for b in baselines
        )
        body.append(
            f"<tr><td>{_e(r['id'])}</td><td><pre>{_e(r['prompt'])}</pre></td><td><pre>{_e(r['expected'])}</pre></td>"
            f"<td><pre>{_e(r['candidate'])}</pre></td>{others}<td>{_e(', '.join(json.loads(r['fields_differing'])))}</td></tr>"
        )
    return (
        f"<table><tr><th>id</th><th>input</th><th>expected</th><th>candidate</th>{head}<th>differs in</th></tr>"
        f"{''.join(body)}</table>"
    )


def _cut_off_note(candidate: Evaluated, settings: dict) -> list[str]:
    """A warning when max_new_tokens ended some of the candidate's answers (they score as unfinished)."""
    share = candidate.metrics.get("cut_off", 0.0)
    if not share:
        return []
    n = round(share * int(candidate.metrics.get("examples", len(candidate.predictions))))
    limit = _e(settings.get("max_new_tokens", "?"))
    note = (
        f"<p class=fail>{n} answers ({share:.1%}) were cut off at max_new_tokens {limit} before they ended; "
        "they count as they are (an unfinished JSON document is invalid). "
        "Raise eval.max_new_tokens if the answers need more tokens.</p>"
    )
    return [note]


def render_html(
    *,
    title: str,
    task_type: str,
    candidate: Evaluated,
    baselines: list[Evaluated],
    verdicts: list[dict],
    passed: bool | None,
    divergence_rows: list[dict],
    confusion: tuple[list[str], list[list[int]]] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    samples: int = 20,
    comparison: list[dict] | None = None,  # metric_rows(...) when the caller already computed them
) -> str:
    names = [b.name for b in baselines]
    settings = candidate.settings
    gate = (
        ""
        if passed is None
        else f" — gate <span class={'pass' if passed else 'fail'}>{'PASSED' if passed else 'FAILED'}</span>"
    )
    summ = summary(divergence_rows, names)
    lines = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}{gate}</h1>",
        (
            f"<p>{_e(task_type)} task · {int(candidate.metrics.get('examples', len(candidate.predictions)))} examples · "
            f"decoding {_e(settings.get('decoding', '?'))} · max_new_tokens {_e(settings.get('max_new_tokens', '?'))} · "
            f"eval sha256 {_e(str(settings.get('eval_sha256', ''))[:12])} · CIs: paired bootstrap, {resamples} resamples, "
            f"seed {seed}, {confidence:.0%}</p>"
        ),
        *_cut_off_note(candidate, settings),
        "<h2>Metrics</h2>",
        _metric_table(
            comparison
            if comparison is not None
            else metric_rows(candidate, baselines, resamples, seed, confidence),
            names,
            confidence,
        ),
        "<h2>Gate</h2>",
        _verdict_table(verdicts),
    ]
    if confusion is not None:
        lines += ["<h2>Confusion matrix (candidate)</h2>", _confusion_table(*confusion)]
    chart = _field_chart(candidate, baselines)
    if chart:
        lines += ["<h2>Field match</h2>", chart]
    lines.append("<h2>Divergences</h2><ul>")
    for name in names:
        if name in summ:
            c = summ[name]
            lines.append(f"<li>vs {_e(name)}: {c['win']} wins, {c['loss']} losses, {c['tie']} ties</li>")
    if summ["fields_wrong"]:
        wrong = ", ".join(f"{_e(f)} ({n})" for f, n in summ["fields_wrong"])
        lines.append(f"<li>what the candidate gets wrong most: {wrong}</li>")
    lines += ["</ul>", _divergence_table(divergence_rows, names, samples), "</body></html>"]
    return "\n".join(lines)
