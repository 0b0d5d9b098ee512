"""Starts a run on an instance, prints its events as they stream, then its output.

    AGENTRY_API_KEY=<developer key> python examples/start_run.py \
        workspaces/acme/projects/web/instances/echo-1 "hello there"

AGENTRY_TARGET defaults to 127.0.0.1:50051. Pair it with examples/echo_worker.py.
"""

import os
import sys

from agentry import Client, execution_pb2 as ex, registry_pb2 as reg

target = os.environ.get("AGENTRY_TARGET", "127.0.0.1:50051")
instance_name, text = sys.argv[1], sys.argv[2]

# Connect: the key is sent as `authorization: Bearer <key>`; unary calls get a 30 s
# deadline and are retried on UNAVAILABLE.
client = Client(target, os.environ["AGENTRY_API_KEY"])

# One call. Failures raise typed errors: agentry.NotFound, agentry.PermissionDenied …
instance = client.registry.GetInstance(reg.GetInstanceRequest(name=instance_name))
print(f"{instance.name} runs {instance.agent} (revision {instance.agent_revision})")

# Start a run (in a new session of the instance) and stream it: stored events first,
# then live ones, until the terminal status; a dropped connection is resumed from the
# last sequence seen.
run = client.start_run(instance.name, text)
for event in client.stream_run_events(run.name):
    kind = event.WhichOneof("kind")
    if kind == "message_delta":
        print(event.message_delta.text, end="", flush=True)
    elif kind == "status_changed":
        print(f"[{ex.RunStatus.Name(event.status_changed.status)}]", flush=True)

# Or just wait for the outcome: the finished run, with its output and usage.
finished = client.wait_run(run, timeout=60)
print(f"output: {finished.output[-1].content!r} ({finished.usage.output_tokens} tokens)")

client.close()
