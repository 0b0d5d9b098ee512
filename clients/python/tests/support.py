"""Helpers the tests share: agents with an instance and a session, a worker in a thread
(``running``, which is :func:`agentry.testing.running_worker`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from agentry.testing import Tenant
from agentry.testing import running_worker as running
from agentry.v1 import common_pb2, execution_pb2 as ex, registry_pb2 as reg


@dataclass(frozen=True)
class Agent:
    """An agent with one instance and one session, ready for runs."""

    name: str
    instance: str
    session: str


__all__ = ["Agent", "make_agent", "user_input", "running", "kinds"]


def make_agent(tenant: Tenant, tools: dict[str, common_pb2.ToolRisk.ValueType] | None = None) -> Agent:
    """A fresh agent (unique id), an instance of it and a session with that instance."""
    agent_id = f"a-{uuid.uuid4().hex[:10]}"
    with tenant.client() as client:
        agent = client.registry.CreateAgent(
            reg.CreateAgentRequest(
                parent=tenant.workspace,
                agent_id=agent_id,
                agent=reg.Agent(tools=[reg.Tool(name=n, risk=r) for n, r in (tools or {}).items()]),
            )
        )
        instance = client.registry.CreateInstance(
            reg.CreateInstanceRequest(parent=tenant.project, instance_id=agent_id, instance=reg.Instance(agent=agent.name))
        )
        session = client.execution.CreateSession(
            ex.CreateSessionRequest(parent=tenant.project, session=ex.Session(instance=instance.name))
        )
    return Agent(agent.name, instance.name, session.name)


def user_input(text: str) -> list[ex.Message]:
    return [ex.Message(role=ex.MESSAGE_ROLE_USER, content=text)]


def kinds(events: list[ex.RunEvent]) -> list[str]:
    """Event kinds, with the status for status changes: ``status:RUN_STATUS_RUNNING``."""
    out: list[str] = []
    for event in events:
        kind = str(event.WhichOneof("kind"))
        if kind == "status_changed":
            kind = "status:" + ex.RunStatus.Name(event.status_changed.status)
        out.append(kind)
    return out

