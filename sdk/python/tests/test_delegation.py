"""A running mission delegates part of itself to a sub-agent, as
`mandate mission delegate` does; the child starts with its own key."""

from __future__ import annotations

import pytest

import mandate
from conftest import Lab


def test_delegate_to_an_ephemeral_sub_agent(lab: Lab) -> None:
    with mandate.Mission.start(lab.url, lab.mission(budget=50)) as parent:
        scope = 'permit(principal, action == Action::"read", resource) when { resource is Route };'
        child = parent.delegate(
            ephemeral="fetcher", goal="Fetch invoice 42", scope=scope, budget=5, ttl_seconds=600
        )
        assert child["start_token"].startswith("mst_")
        assert child["mission"]["parent"] == parent.mission_id
        assert child["mission"]["agent"] == f"fetcher@{child['mission']['id']}"
        with mandate.Mission.start(lab.url, child["start_token"]) as sub, sub.client() as http:
            r = http.get(sub.gateway_url("billing", "/invoices/42"))
            assert r.status_code == 200
            assert len(sub.chain()) == 1
            # Every hop's policy applies: the parent's boundary too.
            with pytest.raises(mandate.Denied):
                http.get(sub.gateway_url("hr", "/people/7"))
        tree = lab.cli_json("mission", "tree", parent.mission_id, token=lab.alice)
        assert child["mission"]["id"] in str(tree)


def test_delegation_that_widens_is_refused(lab: Lab) -> None:
    with mandate.Mission.start(lab.url, lab.mission(budget=10)) as parent:
        with pytest.raises(mandate.Denied) as e:
            parent.delegate(ephemeral="greedy", goal="More than I have", budget=1000)
        assert e.value.code == "delegation_widens"
        with pytest.raises(mandate.MandateError) as both:
            parent.delegate(agent="billing-bot", ephemeral="x", goal="g", budget=1)
        assert both.value.code == "invalid_request"
