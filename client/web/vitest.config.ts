import { defineConfig } from "vitest/config";

// Unit tests of the client-side logic (no browser, no server).
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});
