"""The card preview page: off by default, renders pasted data without fetching or storing it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calcinosis_tools.scenarios import patients_dir
from hooks.preview import PreviewConfigError
from tests.charts import Chart
from tests.hookclient import get, hook_request, make_app, post


def test_off_by_default() -> None:
    assert get(make_app(), "/preview").status_code == 404


def test_a_scenario_is_rendered_with_its_evidence_beneath() -> None:
    app = make_app(preview_enabled=True, preview_scenarios=patients_dir())
    page = get(app, "/preview?scenario=metastatic-esrd-si-units&width=720").text
    assert 'class="panel"' in page and "width:720px" in page
    assert "Ca x P 78.5 mg²/dL² (above 70)" in page
    assert "Full evidence" in page and "Values used" in page and "Subtypes and the findings behind them" in page
    assert "2.55 mmol/L" in page  # the value as the lab reported it, in the evidence table


def test_a_pasted_bundle_or_request_is_rendered_and_nothing_is_fetched() -> None:
    app = make_app(preview_enabled=True)
    chart = Chart("pasted-1")
    chart.calcinosis()
    chart.condition("M34.1", display="CR(E)ST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6)
    page = post(app, "/preview", chart.bundle(), {"Content-Type": "application/json"}).text
    assert "Pattern consistent with dystrophic calcinosis" in page
    request = hook_request(chart, with_server=True)
    del request["prefetch"]
    page = post(app, "/preview", json.dumps(request), {"Content-Type": "application/json"}).text
    assert "fetches nothing" in page and 'class="card' not in page
    bad = post(app, "/preview", "document=%7Bnot+json", {"Content-Type": "application/x-www-form-urlencoded"})
    assert bad.status_code == 400 and "not valid JSON" in bad.text


def test_record_text_is_escaped() -> None:
    app = make_app(preview_enabled=True)
    chart = Chart("pasted-2")
    chart.calcinosis()
    chart.condition("M34.1", display="<script>alert(1)</script> syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6)
    page = post(app, "/preview", chart.bundle(), {"Content-Type": "application/json"}).text
    assert "<script>alert(1)" not in page


def test_without_a_scenario_folder_the_page_renders_pasted_documents_only() -> None:
    """As from a wheel or the image, where there is no checkout: the page works, lists nothing."""
    app = make_app(preview_enabled=True)
    page = get(app, "/preview").text
    assert "No scenario folder (CALCINOSIS_PREVIEW_SCENARIOS)" in page and "<option" not in page
    chart = Chart("pasted-3")
    chart.calcinosis()
    chart.condition("M34.1", display="CR(E)ST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6)
    page = post(app, "/preview", chart.bundle(), {"Content-Type": "application/json"}).text
    assert "pattern consistent with dystrophic calcinosis" in page.lower()


def test_any_folder_of_bundles_is_a_scenario_folder(tmp_path: Path) -> None:
    chart = Chart("folder-1")
    chart.calcinosis()
    chart.condition("M34.1", display="CR(E)ST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6)
    (tmp_path / "crest.json").write_text(json.dumps(chart.bundle()))
    (tmp_path / "notes.json").write_text(json.dumps({"not": "a bundle"}))
    app = make_app(preview_enabled=True, preview_scenarios=tmp_path)
    page = get(app, "/preview").text
    assert '<option value="crest"' in page and "notes" not in page
    assert "pattern consistent with dystrophic calcinosis" in get(app, "/preview?scenario=crest").text.lower()


def test_a_missing_scenario_folder_stops_the_start_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(PreviewConfigError, match="CALCINOSIS_PREVIEW_SCENARIOS"):
        make_app(preview_enabled=True, preview_scenarios=tmp_path / "absent")
