// The graphile-worker peer of `agentry-bench peers`: a runner with graphile-worker's
// defaults (its own LISTEN/NOTIFY and polling, its own logger) and `concurrency` slots,
// serving one no-op task. For each job whose result has been written back to the
// database ("job:complete") it prints `done <payload.id>`, which the benchmark reads as
// the job's completion. Started by agentry-bench from .tools/peers, where
// `scripts/bench peers` installs graphile-worker from npm.
import { run } from "graphile-worker";

const runner = await run({
  connectionString: process.env.DATABASE_URL,
  concurrency: Number(process.env.CONCURRENCY ?? "8"),
  noHandleSignals: true,
  taskList: { noop: async () => {} },
});
runner.events.on("job:complete", ({ job }) => {
  process.stdout.write(`done ${job.payload.id}\n`);
});
process.stdout.write("ready\n");
process.on("SIGTERM", () => {
  runner.stop().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
await runner.promise;
