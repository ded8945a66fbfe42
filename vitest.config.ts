import { defineConfig } from "vitest/config";

// Two tiers: `unit` is pure and fast; `integration` shares one local stack (MinIO, DynamoDB
// Local, Hangar's API and event receiver) started by its global setup. The machines have 2 cores, and
// the stack's own processes need one of them, so integration files run one at a time, after the unit tier.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          maxWorkers: 2,
          // Some unit tests hash tens of MiB or run qemu-img; 5 s is too tight on a busy 2-core machine.
          testTimeout: 30_000,
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          globalSetup: ["test/integration/setup/global-setup.ts"],
          // A failing test prints where the stack's log is and what it logged meanwhile.
          setupFiles: ["test/integration/setup/log-on-failure.ts"],
          fileParallelism: false,
          maxWorkers: 1,
          testTimeout: 60_000,
          hookTimeout: 120_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
