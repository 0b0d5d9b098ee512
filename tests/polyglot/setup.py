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
ws_id = os.environ.get("POLYGLOT_WORKSPACE", "poly")  # one workspace per worker language
ws = f"workspaces/{ws_id}"
root = Client(target, root_key)
root.registry.CreateWorkspace(reg.CreateWorkspaceRequest(workspace_id=ws_id, workspace=reg.Workspace()))


def key(role: int) -> str:
    made = root.registry.CreateApiKey(
        reg.CreateApiKeyRequest(parent=ws, api_key=reg.ApiKey(role=role))
    )
    return made.secret


developer, worker = key(common.ROLE_DEVELOPER), key(common.ROLE_WORKER)
dev = Client(target, developer)
root.registry.CreateProject(reg.CreateProjectRequest(parent=ws, project_id="lab", project=reg.Project()))
dev.registry.CreateAgent(
    reg.CreateAgentRequest(
        parent=ws,
        agent_id="researcher",
        agent=reg.Agent(tools=[reg.Tool(name="search", risk=common.TOOL_RISK_WRITE)]),
    )
)
dev.registry.CreateInstance(
    reg.CreateInstanceRequest(
        parent=f"{ws}/projects/lab",
        instance_id="researcher-1",
        instance=reg.Instance(agent=f"{ws}/agents/researcher"),
    )
)
dev.create_context(f"{ws}/projects/lab", "notes", {"findings": []})
json.dump(
    {
        "developer": developer,
        "worker": worker,
        "agent": f"{ws}/agents/researcher",
        "instance": f"{ws}/projects/lab/instances/researcher-1",
        "context": f"{ws}/projects/lab/contexts/notes",
    },
    sys.stdout,
)
