"""Request URLs expanded by uritemplate (provisioner/graph/urls.py) are the URLs kiota's own
expander (stduritemplate, through RequestInformation.url) gives, for the requests we build:
odd characters in keys, filters with quotes and Swedish letters, lists, booleans, numbers."""

from __future__ import annotations

from typing import Any

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder
from msgraph.generated.models.reference_create import ReferenceCreate
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

from provisioner.graph.batch import item_url
from provisioner.graph.client import Target
from provisioner.graph.gateway import Graph
from provisioner.graph.odata import eq
from provisioner.graph.urls import expand

BASE = "https://graph.microsoft.com/v1.0"
KEYS = ["a3f1c2d4-0000-4000-8000-000000000001", "o'brien_p.se#EXT#@region.onmicrosoft.com",
        "åsa.öberg@politiker.example-region.se", "a b/c?d&e=f%g"]


def requests(graph: Graph) -> list[Any]:
    client: GraphServiceClient = graph.client
    users = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters
    groups = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters
    out = [graph.user_request(k, ["id", "displayName", "onPremisesExtensionAttributes"]) for k in KEYS]
    out += [graph.mailbox_settings_request(k) for k in KEYS]
    out += [client.users.to_get_request_information(RequestConfiguration(query_parameters=users(
        filter=f, select=["id", "userPrincipalName"], top=999, count=True, orderby=["displayName"])))
        for f in (eq("userPrincipalName", KEYS[1]), "startswith(displayName,'Åsa Ö')",
                  "employeeId eq '19121212-1212' and accountEnabled eq true")]
    out += [client.groups.to_get_request_information(RequestConfiguration(query_parameters=groups(
        filter=eq("displayName", "Politiker Barn- och utbildningsnämnden"), select=["id"])))]
    out += [client.groups.by_group_id(k).members.ref.to_post_request_information(ReferenceCreate(
        odata_id=f"{BASE}/directoryObjects/{k}")) for k in KEYS]
    return out


@pytest.fixture
def graph(memory_sandbox: Any) -> Graph:
    return Graph(Target(sandbox_app=memory_sandbox))


def test_uritemplate_expands_our_requests_as_kiota_does(graph: Graph) -> None:
    for info in requests(graph):
        info.path_parameters["baseurl"] = BASE
        assert expand(info, BASE) == info.url


def test_batch_items_are_relative_and_name_query_options_as_graph_writes_them(graph: Graph) -> None:
    url = item_url(graph.user_request(KEYS[1], ["id", "displayName"]))
    assert url == "/users/o%27brien_p.se%23EXT%23%40region.onmicrosoft.com?$select=id,displayName"
