// Polyglot test, the client (TypeScript, developer key): starts a run of the Python
// worker's agent at autonomy L1, approves the plan it proposes, follows the event stream
// to the end, then reads the context the worker wrote and rolls it back. Prints the
// event log one line per event and exits non-zero when anything differs from what the
// test expects.
//
//   node --conditions=agentry-source --import tsx client.mts   (cwd: clients/typescript)

import {
  ApprovalDecision,
  AutonomyLevel,
  MessageRole,
  RunStatus,
  StopReason,
  createAgentryClient,
  streamRunEvents,
  type RunEvent,
} from "../../clients/typescript/src/index.ts";

const setup = JSON.parse(process.env.POLYGLOT_SETUP ?? "{}");
const client = createAgentryClient({ baseUrl: process.env.AGENTRY_URL!, apiKey: setup.developer });
const project = setup.instance.slice(0, setup.instance.indexOf("/instances/"));

function describe(e: RunEvent): string {
  const k = e.kind;
  switch (k.case) {
    case "statusChanged": {
      const stop = k.value.stopReason ? ` ${StopReason[k.value.stopReason]}` : "";
      return `a${e.attempt} status ${RunStatus[k.value.previousStatus]}->${RunStatus[k.value.status]}${stop}`;
    }
    case "messageDelta":
      return `a${e.attempt} delta ${JSON.stringify(k.value.text)}`;
    case "messageCompleted":
      return `a${e.attempt} message ${MessageRole[k.value.message!.role]} ${JSON.stringify(k.value.message!.content)}`;
    case "toolCallStarted":
      return `a${e.attempt} tool_started ${k.value.toolCall!.id} ${k.value.toolCall!.tool}`;
    case "toolCallCompleted":
      return `a${e.attempt} tool_completed ${k.value.toolCall!.id}${k.value.synthetic ? " synthetic" : ""}`;
    case "planProposed":
      return `a${e.attempt} plan ${k.value.approval!.steps.map((s) => s.tool).join(",")} auto=${k.value.autoApproved}`;
    case "approvalDecided":
      return `a${e.attempt} decided ${ApprovalDecision[k.value.approval!.decision]}`;
    default:
      return `a${e.attempt} ${k.case}`;
  }
}

const session = await client.execution.createSession({ parent: project, session: { instance: setup.instance } });
const run = await client.execution.createRun({
  parent: session.name,
  run: {
    input: [{ role: MessageRole.USER, content: "rust async runtimes" }],
    autonomyLevel: AutonomyLevel.L1,
    retryPolicy: { maxAttempts: 3, initialInterval: { seconds: 0n, nanos: 200_000_000 } },
  },
});

const seen: string[] = [];
let sequence = 0;
for await (const event of streamRunEvents(client, { name: run.name })) {
  if (event.sequence !== BigInt(sequence + 1)) throw new Error(`gap or repeat at ${event.sequence} after ${sequence}`);
  sequence += 1;
  const line = describe(event);
  seen.push(line);
  console.log(`  #${event.sequence} ${line}`);
  if (event.kind.case === "planProposed" && !event.kind.value.autoApproved) {
    await client.execution.decideApproval({
      name: run.name,
      approvalId: event.kind.value.approval!.approvalId,
      decision: ApprovalDecision.APPROVE,
      comment: "go ahead",
    });
  }
}

const expected = [
  "a0 status UNSPECIFIED->QUEUED",
  "a1 status QUEUED->RUNNING",
  'a1 delta "Let me look that up. "',
  "a1 plan search auto=false",
  "a1 status RUNNING->REQUIRES_ACTION",
  "a1 decided APPROVE",
  "a1 status REQUIRES_ACTION->QUEUED",
  "a1 status QUEUED->RUNNING",
  "a1 tool_started call-1 search",
  // The worker was killed here: its open call is closed and the attempt re-queued.
  "a1 tool_completed call-1 synthetic",
  "a1 status RUNNING->QUEUED WORKER_LOST",
  "a2 status QUEUED->RUNNING",
  "a2 tool_started call-2 search",
  "a2 tool_completed call-2",
  'a2 delta "Found 3 results."',
  'a2 message ASSISTANT "Found 3 results."',
  "a2 status RUNNING->SUCCEEDED END_TURN",
];
if (JSON.stringify(seen) !== JSON.stringify(expected)) {
  console.error("expected:\n" + expected.map((l) => `  ${l}`).join("\n"));
  throw new Error("the event log differs from the expected sequence");
}

const finished = await client.execution.getRun({ name: run.name });
if (finished.status !== RunStatus.SUCCEEDED || finished.attempt !== 2) {
  throw new Error(`run ended ${RunStatus[finished.status]} at attempt ${finished.attempt}`);
}

const head = await client.contexts.readContext({ name: setup.context });
const findings = JSON.stringify(head.data);
if (head.version !== 2n || !findings.includes("3 hits for rust async runtimes")) {
  throw new Error(`context head is version ${head.version}: ${findings}`);
}
const rolled = await client.contexts.rollbackContext({ name: setup.context, targetVersion: 1n, expectedVersion: 2n });
const after = await client.contexts.readContext({ name: setup.context });
if (rolled.version?.version !== 3n || JSON.stringify(after.data) !== JSON.stringify((await client.contexts.readContext({ name: setup.context, version: 1n })).data)) {
  throw new Error(`rollback: version ${rolled.version?.version}, data ${JSON.stringify(after.data)}`);
}
console.log(`polyglot: ${seen.length} events as expected; context v2 read and rolled back to v1 as v3`);
client.close();
