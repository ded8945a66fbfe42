/** The importer's fan-out settings in the integration stack (see fanout.test.ts). */
export const TEST_FANOUT_ENV = {
  HANGAR_FANOUT_THRESHOLD: String(72 * 1024 * 1024),
  HANGAR_FANOUT_RANGE_BYTES: String(16 * 1024 * 1024),
  HANGAR_FANOUT_WORKERS: "3",
  HANGAR_FANOUT_HASH_LINK_BYTES: String(24 * 1024 * 1024),
};
