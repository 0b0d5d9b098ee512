"""The blocking and asyncio clients against a real server: auth, typed errors with
details, pagination, compare-and-swap on a context."""

from __future__ import annotations

import uuid

import pytest
from agentry.testing import Tenant
from support import make_agent, user_input

import agentry
from agentry import AsyncClient, Client
from agentry.v1 import context_pb2 as ctx, execution_pb2 as ex, registry_pb2 as reg
from google.protobuf import json_format, struct_pb2


def test_a_valid_bearer_key_is_accepted(tenant: Tenant) -> None:
    with tenant.client(tenant.reader_key) as client:
        project = client.registry.GetProject(reg.GetProjectRequest(name=tenant.project))
    assert project.name == tenant.project


def test_an_unknown_key_is_unauthenticated(tenant: Tenant) -> None:
    with Client(tenant.target, "agk_not_a_real_key") as client:
        with pytest.raises(agentry.Unauthenticated) as caught:
            client.registry.GetProject(reg.GetProjectRequest(name=tenant.project))
    assert caught.value.reason == "INVALID_API_KEY"
    assert caught.value.domain == "agentry.dev"


def test_a_role_without_the_right_is_permission_denied(tenant: Tenant) -> None:
    with tenant.client(tenant.worker_key) as client:
        with pytest.raises(agentry.PermissionDenied) as caught:
            client.registry.CreateProject(reg.CreateProjectRequest(parent=tenant.workspace, project_id="nope"))
    assert caught.value.reason == "ROLE_NOT_ALLOWED"


def test_another_workspace_is_permission_denied_before_lookup(tenant: Tenant) -> None:
    with tenant.client() as client:
        with pytest.raises(agentry.PermissionDenied) as caught:
            client.registry.GetProject(reg.GetProjectRequest(name="workspaces/someone-else/projects/web"))
    assert caught.value.reason == "WORKSPACE_MISMATCH"


def test_bad_input_carries_field_violations(tenant: Tenant) -> None:
    with tenant.client(tenant.admin_key) as client:
        with pytest.raises(agentry.InvalidArgument) as caught:
            client.registry.CreateProject(reg.CreateProjectRequest(parent=tenant.workspace, project_id="Not A Slug"))
    error = caught.value
    assert error.reason == "INVALID_ARGUMENT"
    assert [v.field for v in error.field_violations] == ["project_id"]
    assert "project_id" in str(error)


def test_a_busy_session_is_failed_precondition_with_its_reason(tenant: Tenant) -> None:
    agent = make_agent(tenant)
    with tenant.client() as client:
        client.execution.CreateRun(ex.CreateRunRequest(parent=agent.session, run=ex.Run(input=user_input("one"))))
        with pytest.raises(agentry.FailedPrecondition) as caught:
            client.execution.CreateRun(ex.CreateRunRequest(parent=agent.session, run=ex.Run(input=user_input("two"))))
    assert caught.value.reason == "SESSION_BUSY"


def test_paginate_follows_next_page_token(tenant: Tenant) -> None:
    with tenant.client(tenant.admin_key) as client:
        created = sorted(
            client.registry.CreateProject(
                reg.CreateProjectRequest(parent=tenant.workspace, project_id=f"p-{i}-{uuid.uuid4().hex[:6]}")
            ).name
            for i in range(7)
        )
        first = client.registry.ListProjects(reg.ListProjectsRequest(parent=tenant.workspace, page_size=3))
        assert len(first.projects) == 3 and first.next_page_token

        request = reg.ListProjectsRequest(parent=tenant.workspace, page_size=3)
        listed = [p.name for p in client.paginate(client.registry.ListProjects, request)]
    assert set(created) <= set(listed)
    assert len(listed) == len(set(listed)) == 8  # the tenant's own project too


async def test_async_paginate_and_errors(tenant: Tenant) -> None:
    async with AsyncClient(tenant.target, tenant.admin_key) as client:
        request = reg.ListApiKeysRequest(parent=tenant.workspace, page_size=1)
        keys = [k async for k in client.paginate(client.registry.ListApiKeys, request)]
        assert len(keys) >= 4
        with pytest.raises(agentry.NotFound) as caught:
            await client.registry.GetProject(reg.GetProjectRequest(name=f"{tenant.workspace}/projects/missing"))
    assert caught.value.reason == "RESOURCE_NOT_FOUND"


def _doc(**fields: object) -> struct_pb2.Value:
    return json_format.ParseDict(fields, struct_pb2.Value())


def test_a_stale_compare_and_swap_is_a_version_conflict(tenant: Tenant) -> None:
    with tenant.client() as client:
        context = client.contexts.CreateContext(
            ctx.CreateContextRequest(parent=tenant.project, context_id=f"c-{uuid.uuid4().hex[:8]}", data=_doc(turns=0))
        )
        written = client.contexts.WriteContext(
            ctx.WriteContextRequest(name=context.name, expected_version=1, merge_patch=_doc(turns=1))
        )
        assert written.version.version == 2
        with pytest.raises(agentry.VersionConflict) as caught:
            client.contexts.WriteContext(
                ctx.WriteContextRequest(name=context.name, expected_version=1, merge_patch=_doc(turns=5))
            )
    assert caught.value.current_version == 2
    assert isinstance(caught.value, agentry.Aborted)
