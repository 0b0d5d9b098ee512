"""The blocking and asyncio clients against a real server: auth, typed errors with
details, pagination, context helpers with plain values and compare-and-swap, start_run and
wait_run; the package's exports."""

from __future__ import annotations

import importlib.metadata
import uuid

import pytest
from agentry.testing import Tenant
from support import make_agent, user_input

import agentry
from agentry import AsyncClient, Client
from agentry.v1 import execution_pb2 as ex, registry_pb2 as reg


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


def test_context_helpers_take_and_give_plain_values(tenant: Tenant) -> None:
    with tenant.client() as client:
        context = client.create_context(tenant.project, f"c-{uuid.uuid4().hex[:8]}", {"turns": 0, "facts": []})
        written = client.write_context(context.name, expected_version=1, merge_patch={"turns": 1})
        assert written.version.version == 2
        patched = client.write_context(
            context.name,
            json_patch=[{"op": "test", "path": "/turns", "value": 1}, {"op": "add", "path": "/facts/-", "value": "tea"}],
        )
        assert patched.version.version == 3
        with pytest.raises(agentry.VersionConflict) as caught:
            client.write_context(context.name, expected_version=1, data={"turns": 5})
        assert client.context_data(context.name) == {"turns": 1, "facts": ["tea"]}
        assert client.context_data(context.name, version=1) == {"turns": 0, "facts": []}
    assert caught.value.current_version == 3
    assert isinstance(caught.value, agentry.Aborted)


def test_write_context_takes_exactly_one_change() -> None:
    with Client("127.0.0.1:1", "k") as client:
        with pytest.raises(ValueError, match="exactly one"):
            client.write_context("workspaces/w/projects/p/contexts/c")
        with pytest.raises(ValueError, match="exactly one"):
            client.write_context("workspaces/w/projects/p/contexts/c", data={}, merge_patch={})


async def test_the_async_helpers_start_a_run_and_time_out_waiting(tenant: Tenant) -> None:
    agent = make_agent(tenant)  # no worker serves it: the run stays QUEUED
    async with tenant.async_client() as client:
        run = await client.start_run(agent.instance, "anyone there?", timeout=600, labels={"case": "wait"})
        assert run.status == ex.RUN_STATUS_QUEUED
        assert run.name.startswith(f"{tenant.project}/sessions/") and not run.name.startswith(agent.session)
        assert [m.content for m in run.input] == ["anyone there?"]
        assert run.timeout.seconds == 600 and dict(run.labels) == {"case": "wait"}
        with pytest.raises(TimeoutError):
            await client.wait_run(run, timeout=1.0)
        await client.execution.CancelRun(ex.CancelRunRequest(name=run.name))
        cancelled = await client.wait_run(run.name, timeout=10)
    assert cancelled.status == ex.RUN_STATUS_CANCELLED


def test_structs_round_trip_plain_values() -> None:
    document = {"a": 1, "b": [1.5, "x", None, True], "c": {"d": {}}}
    assert agentry.to_python(agentry.to_struct(document)) == document
    assert agentry.to_python(agentry.to_value([1, {"k": "v"}])) == [1, {"k": "v"}]
    assert agentry.to_python(agentry.to_value("text")) == "text"
    struct = agentry.to_struct({"x": 1})
    assert agentry.to_struct(struct) is struct
    assert agentry.to_value(struct).struct_value == struct
    with pytest.raises(TypeError):
        agentry.to_struct([1, 2])  # type: ignore[arg-type]


def test_every_error_class_is_exported_from_the_package() -> None:
    defined = {
        name
        for name, value in vars(agentry.errors).items()
        if isinstance(value, type) and value.__module__ == "agentry.errors"
    }
    assert {"AgentryError", "VersionConflict", "LeaseExpired", "FieldViolation"} <= defined
    for name in defined:
        assert getattr(agentry, name) is getattr(agentry.errors, name), name
        assert name in agentry.__all__, name


def test_the_version_is_the_installed_distribution_s() -> None:
    assert agentry.__version__ == importlib.metadata.version("agentry-client")
