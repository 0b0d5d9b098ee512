// Bundles page.ts (with the generated code and error interceptor of clients/typescript)
// into dist/page.js, and copies index.html beside it.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");

// The runtime packages resolve from this directory's node_modules even when imported
// from clients/typescript/src (which may have node_modules of its own), so the bundle
// holds one copy of each.
const runtimeFromHere = {
  name: "runtime-from-here",
  setup(b) {
    b.onResolve({ filter: /^@(bufbuild|connectrpc)\// }, (args) => {
      if (args.pluginData === "here") {
        return undefined;
      }
      return b.resolve(args.path, { kind: args.kind, resolveDir: here, pluginData: "here" });
    });
  },
};

mkdirSync(dist, { recursive: true });
await build({
  entryPoints: [join(here, "page.ts")],
  outfile: join(dist, "page.js"),
  bundle: true,
  format: "esm",
  target: "es2022",
  sourcemap: "inline",
  logLevel: "warning",
  plugins: [runtimeFromHere],
});
copyFileSync(join(here, "index.html"), join(dist, "index.html"));
