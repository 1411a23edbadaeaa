"""Routing: the called AE title or DICOM attribute rules choose the model; first match wins."""

from __future__ import annotations

from pathlib import Path

from dicom_node.core.config import NodeConfig, RoutingRule
from dicom_node.intake.routing import Router

REPO = Path(__file__).resolve().parents[2]


def test_example_configuration_routes_by_called_ae_and_by_description() -> None:
    router = Router(NodeConfig.load(REPO / "config" / "node.yaml").routing)
    assert router.route("LAUREL_LEG", {"Modality": "MR", "SeriesDescription": "thigh"}) == "leg"
    assert router.route("LAUREL_THIGH", {}) == "thigh"
    assert router.route("LAUREL", {"Modality": "MR", "SeriesDescription": "T1 Oberschenkel"}) == "thigh"
    assert router.route("LAUREL", {"Modality": "MR", "SeriesDescription": "calf t2"}) == "leg"
    assert router.route("LAUREL", {"Modality": "CT", "SeriesDescription": "thigh"}) is None
    assert router.route("LAUREL", {"Modality": "MR", "SeriesDescription": "localizer"}) is None
    assert router.called_ae_titles == {"LAUREL_LEG", "LAUREL_THIGH"}
    assert router.keywords == ("Modality", "SeriesDescription")


def test_first_match_wins_and_all_conditions_must_hold() -> None:
    router = Router(
        [
            RoutingRule(model="special", called_ae="LAUREL", match={"BodyPartExamined": "^LEG$"}),
            RoutingRule(model="mr-any", match={"Modality": "MR"}),
            RoutingRule(model="never", match={"Modality": "MR", "ProtocolName": "x"}),
        ]
    )
    assert router.route("LAUREL", {"Modality": "MR", "BodyPartExamined": "LEG"}) == "special"
    assert router.route("OTHER", {"Modality": "MR", "BodyPartExamined": "LEG"}) == "mr-any"
    assert router.route("LAUREL", {"Modality": "MR", "BodyPartExamined": "LEGS"}) == "mr-any"


def test_a_missing_attribute_never_matches() -> None:
    router = Router([RoutingRule(model="leg", match={"BodyPartExamined": ".*"})])
    assert router.route("LAUREL", {"BodyPartExamined": None}) is None
    assert router.route("LAUREL", {}) is None
    assert router.route("LAUREL", {"BodyPartExamined": ""}) == "leg"
