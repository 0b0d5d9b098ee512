"""Polyglot test, step 1 (Python client, ROOT key): a workspace with a developer and a
worker key, an agent `researcher` whose `search` tool is WRITE-risk (so an L1 run must ask
a human), an instance, and a context `notes` at version 1. Prints the names and keys as
JSON for the other steps."""

import json
import os
import sys

from agentry import Client
from agentry.v1 import common_pb2 as common, registry_pb2 as reg

target, root_key = sys.argv[1], os.environ["AGENTRY_ROOT_KEY"]
root = Client(target, root_key)
root.registry.CreateWorkspace(reg.CreateWorkspaceRequest(workspace_id="poly", workspace=reg.Workspace()))


def key(role: int) -> str:
    made = root.registry.CreateApiKey(
        reg.CreateApiKeyRequest(parent="workspaces/poly", api_key=reg.ApiKey(role=role))
    )
    return made.secret


developer, worker = key(common.ROLE_DEVELOPER), key(common.ROLE_WORKER)
dev = Client(target, developer)
root.registry.CreateProject(reg.CreateProjectRequest(parent="workspaces/poly", project_id="lab", project=reg.Project()))
dev.registry.CreateAgent(
    reg.CreateAgentRequest(
        parent="workspaces/poly",
        agent_id="researcher",
        agent=reg.Agent(tools=[reg.Tool(name="search", risk=common.TOOL_RISK_WRITE)]),
    )
)
dev.registry.CreateInstance(
    reg.CreateInstanceRequest(
        parent="workspaces/poly/projects/lab",
        instance_id="researcher-1",
        instance=reg.Instance(agent="workspaces/poly/agents/researcher"),
    )
)
dev.create_context("workspaces/poly/projects/lab", "notes", {"findings": []})
json.dump(
    {
        "developer": developer,
        "worker": worker,
        "agent": "workspaces/poly/agents/researcher",
        "instance": "workspaces/poly/projects/lab/instances/researcher-1",
        "context": "workspaces/poly/projects/lab/contexts/notes",
    },
    sys.stdout,
)
