import { defineConfig } from "vitest/config";
import { fileURLToPath } from "node:url";

const pb = fileURLToPath(new URL("./node_modules/@bufbuild/protobuf/dist/esm", import.meta.url));

// The end-to-end test: a real parleyd, the built app, headless Chromium.
export default defineConfig({
  resolve: {
    // gen/ts sits outside this package; point its imports at our copy.
    alias: [{ find: /^@bufbuild\/protobuf(\/[a-z0-9]+)?$/, replacement: `${pb}$1/index.js` }],
  },
  test: {
    include: ["e2e/**/*.e2e.test.ts"],
    environment: "node",
    testTimeout: 90_000,
    hookTimeout: 90_000,
    fileParallelism: false,
    sequence: { concurrent: false },
  },
});
