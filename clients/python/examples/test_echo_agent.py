"""A test of an agent against a real server, as a user of the SDK writes one.

The pytest plugin of `agentry.testing` (installed with the package) provides the
`agentry_tenant` fixture: a fresh workspace, with a project and a key per role, on an
`agentry serve` started once per test session on a temporary SQLite file (the binary is
$AGENTRY_BIN, or `agentry` on the PATH).

    AGENTRY_BIN=target/debug/agentry pytest clients/python/examples/test_echo_agent.py
"""

from collections.abc import AsyncIterator

from agentry import Message, Step, TaskContext, TextDelta, Worker, registry_pb2 as reg, to_struct
from agentry.testing import Tenant, running_worker


async def shout(task: TaskContext) -> AsyncIterator[Step]:
    volume = task.config["volume"]  # the instance's config, as a dict
    text = task.input[-1].content.upper()
    yield TextDelta(text)
    yield Message(text + "!" * volume)


def test_the_agent_shouts(agentry_tenant: Tenant) -> None:
    with agentry_tenant.client() as client:
        agent = client.registry.CreateAgent(
            reg.CreateAgentRequest(
                parent=agentry_tenant.workspace,
                agent_id="shout",
                agent=reg.Agent(default_config=to_struct({"volume": 1})),
            )
        )
        instance = client.registry.CreateInstance(
            reg.CreateInstanceRequest(
                parent=agentry_tenant.project,
                instance_id="shout-1",
                instance=reg.Instance(agent=agent.name, config=to_struct({"volume": 3})),
            )
        )
        worker = Worker(agentry_tenant.target, agentry_tenant.worker_key)
        worker.register(agent.name, shout)
        with running_worker(worker):
            finished = client.wait_run(client.start_run(instance.name, "hello"), timeout=30)
    assert [m.content for m in finished.output] == ["HELLO!!!"]
