// dist/cjs holds CommonJS in a `"type": "module"` package: mark the folder so that Node
// (and TypeScript, for the .d.ts files there) read its files as CommonJS.
import { writeFileSync } from "node:fs";

writeFileSync(new URL("../dist/cjs/package.json", import.meta.url), '{\n  "type": "commonjs"\n}\n');
