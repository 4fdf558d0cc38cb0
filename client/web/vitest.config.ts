import { defineConfig } from "vitest/config";
import { fileURLToPath } from "node:url";

const pb = fileURLToPath(new URL("./node_modules/@bufbuild/protobuf/dist/esm", import.meta.url));

// Unit tests of the client-side logic (no browser, no server).
export default defineConfig({
  resolve: {
    // gen/ts sits outside this package; point its imports at our copy.
    alias: [{ find: /^@bufbuild\/protobuf(\/[a-z0-9]+)?$/, replacement: `${pb}$1/index.js` }],
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});
