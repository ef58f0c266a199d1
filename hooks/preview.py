"""The card preview page for integration engineers (off by default: `CALCINOSIS_PREVIEW_ENABLED`).

`GET /preview` lists the charts of the scenario folder (`CALCINOSIS_PREVIEW_SCENARIOS`: any folder of
FHIR Bundles, one patient each, such as deploy/fhir-sandbox/patients of a source checkout; without it
the page renders pasted documents only, which is how it works from a wheel or the image); `GET /preview?scenario=all&width=400` shows every
scenario's panel on one page; `GET /preview?scenario=NAME&width=400` renders that
patient's cards as an EHR side panel renders them (GitHub-flavoured markdown at the panel's width),
with the full evidence of each card's extension laid out beneath: the values with their dates and
ranges, the findings of every subtype, risk factors, workup and differentials. `POST /preview`
takes a pasted FHIR Bundle or CDS Hooks request (form field `document`) and renders its cards.

It stores nothing and fetches nothing: a pasted hook request is answered from its prefetch only
(its `fhirServer` is never called), and nothing of it is logged. Run it on a development instance,
not where EHRs call the service: the page has no authentication of its own.

Each card's summary and opening lines (the headline, the strongest evidence, what is missing, the
next step and any caution) are marked `.opening`; a small script measures them and writes the
layout into `#layout` so that the browser test can hold them to the height budget.
"""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from markdown_it import MarkdownIt

from fhir_mapping.anchor import bundle_anchor
from fhir_mapping.mapping import bundle_resources
from hooks.service import CalcinosisService

WIDTHS = (400, 720)
"""Side-panel widths the page offers: a narrow sidebar and a wide one (clinical-knowledge.md 11.4)."""
MAX_DOCUMENT_BYTES = 10_000_000
_OPENING_STARTS = ("No result on file", "Result pending", "Next:", "**Caution**", "Ranked for", "Also worth")

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; margin: 0;
  background: #eef1f4; color: #1f2328; font-size: 14px; line-height: 1.45; }
header { background: #24425f; color: #fff; padding: 8px 16px; font-size: 15px; }
header a { color: #cfe3ff; }
main { display: flex; gap: 24px; padding: 16px; align-items: flex-start; flex-wrap: wrap; }
.panel { background: #fff; border: 1px solid #c9d1d9; box-sizing: border-box; padding: 8px; }
.card { border: 1px solid #d0d7de; border-left: 6px solid #0969da; border-radius: 4px; padding: 8px 10px;
  margin-bottom: 10px; background: #fff; }
.card.warning { border-left-color: #bf8700; background: #fff8e5; }
.summary { font-weight: 600; font-size: 15px; margin: 0 0 4px 0; }
.detail p, .detail ul { margin: 4px 0; }
.detail ul { padding-left: 18px; }
.source { color: #57606a; font-size: 12px; margin-top: 6px; }
.suggestions button { display: block; margin: 4px 0; padding: 4px 8px; border: 1px solid #0969da;
  background: #f6f8fa; color: #0969da; border-radius: 4px; font-size: 13px; text-align: left; max-width: 100%; }
.links a { display: block; font-size: 12px; margin: 2px 0; }
.evidence { max-width: 760px; }
.evidence h2 { font-size: 16px; margin: 18px 0 6px; }
.evidence h3 { font-size: 14px; margin: 12px 0 4px; }
.evidence table { border-collapse: collapse; font-size: 12px; margin: 4px 0 8px; }
.evidence td, .evidence th { border: 1px solid #d0d7de; padding: 2px 6px; text-align: left; vertical-align: top; }
form textarea { width: 360px; height: 140px; font-family: monospace; font-size: 11px; }
#layout { display: none; }
"""

_MEASURE = """
window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('.panel .card').forEach(function (card) {
    var panel = card.closest('.panel');
    var panelTop = panel.getBoundingClientRect().top;
    var top = card.getBoundingClientRect().top;
    var opening = card.querySelector('.opening');
    var bottom = opening ? opening.getBoundingClientRect().bottom : top;
    out.push({scenario: panel.dataset.scenario || '', topic: card.dataset.topic,
              top: Math.round(top - panelTop), openingBottom: Math.round(bottom - panelTop),
              openingHeight: Math.round(bottom - top), cardHeight: Math.round(card.getBoundingClientRect().height)});
  });
  document.getElementById('layout').textContent = JSON.stringify(out);
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def split_detail(detail: str) -> tuple[str, str]:
    """The detail's opening (headline and evidence, then what is missing, the next step and any
    caution) and what follows it."""
    blocks = detail.split("\n\n")
    opening = [blocks[0]]
    rest = blocks[1:]
    while rest and rest[0].lstrip().startswith(_OPENING_STARTS):
        opening.append(rest.pop(0))
    return "\n\n".join(opening), "\n\n".join(rest)


def render_card(card: dict[str, Any]) -> str:
    """One card as an EHR side panel shows it."""
    opening, further = split_detail(card.get("detail") or "")
    topic = (card.get("source", {}).get("topic") or {}).get("code", "")
    parts = [
        f'<div class="card {_e(card.get("indicator", "info"))}" data-topic="{_e(topic)}">',
        '<div class="opening">',
        f'<p class="summary">{_e(card.get("summary", ""))}</p>',
        f'<div class="detail">{_MARKDOWN.render(opening)}</div>',
        "</div>",
    ]
    if further:
        parts.append(f'<div class="detail further">{_MARKDOWN.render(further)}</div>')
    suggestions = card.get("suggestions") or []
    if suggestions:
        parts.append('<div class="suggestions">')
        parts += [f"<button type='button'>{_e(s.get('label', ''))}</button>" for s in suggestions]
        parts.append("</div>")
    links = card.get("links") or []
    if links:
        parts.append('<div class="links">')
        parts += [f'<a href="{_e(link["url"])}" rel="noreferrer">{_e(link["label"])}</a>' for link in links]
        parts.append("</div>")
    parts.append(f'<div class="source">Source: {_e(card.get("source", {}).get("label", ""))}</div></div>')
    return "\n".join(parts)


def _value(evidence: dict[str, Any]) -> str:
    reported = evidence.get("reported") or ""
    if evidence.get("value") is not None and evidence.get("unit") and reported and evidence.get("unit") not in reported:
        reported += f" (read as {evidence['value']:.4g} {evidence['unit']})"
    return reported


def _evidence_rows(items: list[dict[str, Any]]) -> str:
    if not items:
        return ""
    rows = ["<table><tr><th>What</th><th>Value as reported</th><th>Lab range</th><th>Flag</th><th>Date</th></tr>"]
    for item in items:
        rows.append(
            f"<tr><td>{_e(item.get('display') or item.get('kind') or '')}</td><td>{_e(_value(item))}</td>"
            f"<td>{_e(item.get('labRange', ''))}</td><td>{_e(item.get('interpretation', ''))}</td>"
            f"<td>{_e((item.get('date') or '')[:10])}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def render_evidence(cards: list[dict[str, Any]]) -> str:
    """The full evidence carried in the cards' extensions, laid out for reading."""
    parts = ['<section class="evidence"><h2>Full evidence (from the cards\' extensions)</h2>']
    for card in cards:
        extension = card.get("extension") or {}
        assessment = extension.get("org.calcinosis-cds.assessment")
        if assessment:
            parts.append("<h3>Values used</h3>")
            for derived in assessment.get("derived", []):
                value = derived.get("value")
                shown = f"{value:g} {derived.get('unit', '')}" if isinstance(value, int | float) else ""
                parts.append(
                    f"<p><b>{_e(derived['name'].replace('-', ' '))}</b> {_e(shown)} "
                    f"{_e(derived.get('category', ''))} &middot; {_e(derived.get('formula', ''))}</p>"
                )
                comparisons = "; ".join(
                    f"{c.get('outcome')} {c.get('limit'):g} {c.get('unit', '')} ({c.get('basis')})"
                    for c in derived.get("comparisons", [])
                )
                if comparisons:
                    parts.append(f"<p>{_e(comparisons)}</p>")
                parts.append(_evidence_rows(derived.get("inputs", [])))
            parts.append("<h3>Subtypes and the findings behind them</h3>")
            for subtype in assessment.get("subtypes", []):
                parts.append(f"<p><b>{_e(subtype['subtype'])}</b>: {_e(subtype['likelihood'])}</p><ul>")
                for finding in subtype.get("findings", []):
                    mark = "for" if finding.get("supports") else "against / missing"
                    parts.append(f"<li>{_e(finding['statement'])} <i>({mark})</i>")
                    parts.append(_evidence_rows(finding.get("evidence", [])) + "</li>")
                if subtype.get("missing"):
                    parts.append(f"<li>Missing: {_e(', '.join(subtype['missing']))}</li>")
                parts.append("</ul>")
            risk = assessment.get("calciphylaxisRisk", {})
            factors = [(tier, f) for tier in ("major", "minor", "additional") for f in risk.get(tier, [])]
            if factors:
                parts.append(f"<h3>Calciphylaxis risk factors (pattern: {_e(risk.get('pattern', ''))})</h3><ul>")
                parts += [f"<li>{_e(tier)}: {_e(f['label'])}</li>" for tier, f in factors]
                parts.append("</ul>")
            distribution = assessment.get("distribution", {})
            parts.append(
                f"<p>Distribution: {_e(distribution.get('label', ''))} ({_e(distribution.get('basis', ''))})</p>"
            )
            quality = assessment.get("dataQuality", {})
            parts.append(
                f"<p>Record entries not used: {_e(quality.get('resourcesSkipped', 0))} resources, "
                f"{_e(quality.get('valuesNotUsed', 0))} values</p>"
            )
        workup = extension.get("org.calcinosis-cds.workup")
        if workup:
            parts.append("<h3>Workup</h3><table><tr><th>Item</th><th>Button</th><th>Code</th><th>Why</th></tr>")
            for item in workup:
                parts.append(
                    f"<tr><td>{_e(item.get('label', item['item']))}</td><td>{'yes' if item.get('suggested') else 'no'}"
                    f"</td><td>{_e(item.get('code', 'by name'))}</td><td>{_e(item.get('reason', ''))}</td></tr>"
                )
            parts.append("</table>")
        differentials = extension.get("org.calcinosis-cds.differentials")
        if differentials:
            parts.append("<h3>Differentials</h3><ul>")
            for differential in differentials:
                raised = "; ".join(differential.get("raisedBy", [])) or "subtype unclassified"
                parts.append(
                    f"<li><b>{_e(differential['code'])}</b>: {_e(raised)}. "
                    f"Separating test: {_e(differential.get('separatingTest', ''))}</li>"
                )
            parts.append("</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def panel_html(cards: list[dict[str, Any]], width: int, scenario: str = "") -> str:
    """The side panel: the cards stacked at the panel's width."""
    rendered = "\n".join(render_card(card) for card in cards) or "<p>No cards (the service stays silent).</p>"
    return f'<div class="panel" data-scenario="{_e(scenario)}" style="width:{width}px">{rendered}</div>'


def gallery(panels: list[tuple[str, list[dict[str, Any]]]], width: int) -> str:
    """Every scenario's panel on one page (for review and for the browser test's measurements)."""
    body = "\n".join(f"<h2>{_e(name)}</h2>{panel_html(cards, width, name)}" for name, cards in panels)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>calcinosis-cds card gallery</title>
<style>{_STYLE} .gallery {{ padding: 16px; }} .gallery h2 {{ font-size: 13px; margin: 16px 0 4px; }}</style>
</head><body><header>All sandbox scenarios at {width} px</header><div class="gallery">{body}</div>
<pre id="layout"></pre><script>{_MEASURE}</script></body></html>"""


@dataclass(frozen=True, slots=True)
class PreviewChart:
    """One chart the page lists: a Bundle file of the scenario folder, read as of its anchor day
    (the day its dates are written against), or today when it records none."""

    name: str
    patient_id: str
    resources: list[dict[str, Any]]
    as_of: datetime | None


class PreviewConfigError(ValueError):
    """The configured scenario folder cannot be read (said at start-up, naming the setting)."""


def chart_library(folder: Path | None) -> list[PreviewChart]:
    """The charts of `folder`, by file name: every `*.json` that is a FHIR Bundle holding exactly one
    Patient with an id (other files, such as the sandbox's expected.json, are passed over)."""
    if folder is None:
        return []
    if not folder.is_dir():
        raise PreviewConfigError(f"CALCINOSIS_PREVIEW_SCENARIOS: {folder} is not a folder")
    charts: list[PreviewChart] = []
    for path in sorted(folder.glob("*.json")):
        try:
            bundle = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:
            raise PreviewConfigError(f"CALCINOSIS_PREVIEW_SCENARIOS: cannot read {path.name}") from error
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            continue
        resources = [r for r in bundle_resources(bundle) if isinstance(r, dict)]
        patients = [r["id"] for r in resources if r.get("resourceType") == "Patient" and isinstance(r.get("id"), str)]
        if len(patients) == 1:
            anchor = bundle_anchor(bundle)
            charts.append(PreviewChart(path.stem, patients[0], resources, _noon(anchor) if anchor else None))
    return charts


def page(
    scenarios: list[PreviewChart], cards: list[dict[str, Any]] | None, width: int, chosen: str, note: str = ""
) -> str:
    """The whole page: controls, the side panel and the evidence."""
    options = "".join(
        f'<option value="{_e(s.name)}"{" selected" if s.name == chosen else ""}>{_e(s.name)}</option>'
        for s in scenarios
    )
    widths = " ".join(
        f'<a href="?scenario={quote(chosen)}&amp;width={w}">{w} px</a>' if chosen else f"{w} px" for w in WIDTHS
    )
    panel = ""
    if cards is not None:
        panel = panel_html(cards, width, chosen) + render_evidence(cards)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>calcinosis-cds card preview</title>
<style>{_STYLE}</style></head><body>
<header>Card preview (stores nothing) &middot; panel width: {widths}</header>
<main>
{panel}
<aside>
<form method="get" action="/preview">
  <label>{"Scenario" if scenarios else "No scenario folder (CALCINOSIS_PREVIEW_SCENARIOS)"}
    <select name="scenario">{options}</select></label>
  <input type="hidden" name="width" value="{width}"> <button type="submit">Show</button>
</form>
<form method="post" action="/preview?width={width}">
  <label>Or paste a FHIR Bundle or CDS Hooks request<br><textarea name="document"></textarea></label><br>
  <button type="submit">Render</button>
</form>
{f'<p class="note">{_e(note)}</p>' if note else ""}
</aside>
</main>
<pre id="layout"></pre>
<script>{_MEASURE}</script>
</body></html>"""


def _noon(day: Any) -> datetime:
    return datetime.combine(day, time(12), tzinfo=UTC)


def cards_for_document(service: CalcinosisService, document: Any) -> tuple[list[dict[str, Any]], str]:
    """Cards for a pasted Bundle or hook request (prefetch only), and a note for the reader."""
    if not isinstance(document, dict):
        return [], "Expected a JSON object: a FHIR Bundle or a CDS Hooks request."
    if document.get("resourceType") == "Bundle":
        resources = [r for r in bundle_resources(document) if isinstance(r, dict)]
    elif "hook" in document and isinstance(document.get("prefetch"), dict):
        resources = []
        for value in document["prefetch"].values():
            if isinstance(value, dict) and value.get("resourceType") == "Bundle":
                resources += [r for r in bundle_resources(value) if isinstance(r, dict)]
            elif isinstance(value, dict):
                resources.append(value)
    else:
        return [], "Expected a FHIR Bundle or a CDS Hooks request with prefetch (the preview fetches nothing)."
    patients = [r for r in resources if r.get("resourceType") == "Patient" and isinstance(r.get("id"), str)]
    if len(patients) != 1:
        return [], f"The data must hold exactly one Patient with an id (found {len(patients)})."
    anchor = bundle_anchor(document) if document.get("resourceType") == "Bundle" else None
    as_of = _noon(anchor) if anchor else None
    response = service.respond(resources, patients[0]["id"], uuid.uuid4(), as_of).wire()
    return list(response.get("cards", [])), ""


def register_preview(app: FastAPI, service: CalcinosisService, folder: Path | None = None) -> None:
    """Add the preview routes (only called when the setting enables them), listing the charts of
    `folder` (`CALCINOSIS_PREVIEW_SCENARIOS`)."""
    scenarios = chart_library(folder)
    by_name = {s.name: s for s in scenarios}

    def cards_of(scenario: PreviewChart) -> list[dict[str, Any]]:
        answer = service.respond(scenario.resources, scenario.patient_id, uuid.uuid4(), scenario.as_of)
        return list(answer.wire().get("cards", []))

    def width_of(request: Request) -> int:
        raw = request.query_params.get("width", "400")
        return int(raw) if raw.isdigit() and 240 <= int(raw) <= 1600 else 400

    @app.get("/preview", include_in_schema=False)
    async def preview(request: Request) -> Response:
        width = width_of(request)
        name = request.query_params.get("scenario", "")
        if name == "all":
            return HTMLResponse(gallery([(s.name, cards_of(s)) for s in scenarios], width))
        scenario = by_name.get(name)
        if scenario is None:
            return HTMLResponse(page(scenarios, None, width, ""))
        return HTMLResponse(page(scenarios, cards_of(scenario), width, name))

    @app.post("/preview", include_in_schema=False)
    async def preview_document(request: Request) -> Response:
        width = width_of(request)
        body = await request.body()
        if len(body) > MAX_DOCUMENT_BYTES:
            return HTMLResponse(page(scenarios, None, width, "", "The document is too large."), status_code=413)
        if request.headers.get("content-type", "").startswith("application/json"):
            text = body.decode("utf-8", "replace")
        else:
            text = (parse_qs(body.decode("utf-8", "replace")).get("document") or [""])[0]
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:
            return HTMLResponse(page(scenarios, None, width, "", "That is not valid JSON."), status_code=400)
        cards, note = cards_for_document(service, document)
        return HTMLResponse(page(scenarios, cards if not note else None, width, "", note))
