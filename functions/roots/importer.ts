import { withContext } from "../adapters/observability/context.ts";
import { MetricUnit } from "../adapters/observability/metrics.ts";
import { parseStorageEvent } from "../adapters/s3/events.ts";
import type { ImporterConfig } from "../config.ts";
import type { FanoutSwitch } from "../core/fanout/start.ts";
import { imageIdFromStagingKey } from "../core/image/image.ts";
import { hashThreads } from "../core/import/digests.ts";
import { createImporter, type Importer, type ImportOutcome } from "../core/import/import-uploaded-image.ts";
import { importStorageEvents } from "../core/import/storage-events.ts";
import { recordImport } from "./import-metrics.ts";
import { lazily } from "./lazy.ts";
import { createStore, type RootOptions, type Store } from "./store.ts";

/** Imports of one image taken over from a dead importer before the image is killed (IMPORT_CRASHED). */
const MAX_TAKEOVERS = 3;

/**
 * The switch to the fan-out state machine, when one is configured (docs/scale.md), made with the first
 * import that asks it (lazy.ts): its S3 and Step Functions clients are not part of the function's init.
 */
function fanoutSwitch(config: ImporterConfig, store: Store): FanoutSwitch | undefined {
  const { stateMachineArn, stepFunctionsEndpoint } = config.fanout;
  if (!stateMachineArn) return undefined;
  const policy = importPolicy(config);
  return lazily<FanoutSwitch>(async () => {
    const [{ createFanoutSwitch }, { S3FanoutStorage }, { createS3Client }, { StepFunctionsStarter }] =
      await Promise.all([
        import("../core/fanout/start.ts"),
        import("../adapters/s3/fanout-storage.ts"),
        import("../adapters/s3/object-store.ts"),
        import("../adapters/aws/step-functions.ts"),
      ]);
    return createFanoutSwitch({
      images: store.images,
      objects: store.objects,
      storage: new S3FanoutStorage(createS3Client(config.region, config.s3Endpoint), config.bucket),
      starter: new StepFunctionsStarter(stateMachineArn, config.region, stepFunctionsEndpoint),
      clock: store.clock,
      log: store.log,
      policy,
      osHashAlgo: config.osHashAlgo,
      settings: { ...config.fanout, partSize: config.partSize },
    });
  });
}

const importPolicy = (config: ImporterConfig) => ({
  preferredFormat: config.preferredFormat,
  acceptedFormats: config.acceptedFormats,
  maxVirtualSize: config.maxVirtualSize,
  maxGzipRatio: config.maxGzipRatio,
});

/** The importer function's composition root: S3 notification → import of each staged object. */
export function createImporterFunction(config: ImporterConfig, options: RootOptions = {}) {
  const store = createStore(config, options);
  const fanout = fanoutSwitch(config, store);
  const importer = createImporter({
    images: store.images,
    objects: store.objects,
    clock: store.clock,
    log: store.log,
    osHashAlgo: config.osHashAlgo,
    // A minute by default (docs/reliability.md): a live importer renews it every 20 s, and the image of
    // one that died is taken over about a minute later, when Lambda's first retry comes.
    leaseSeconds: config.importLeaseSeconds,
    maxTakeovers: MAX_TAKEOVERS,
    policy: importPolicy(config),
    progressIntervalMs: 3000,
    ...(fanout ? { fanout } : {}),
    // Once the image is held, every line of its import carries the request id of the call that created
    // it, from the record the importer has just read, so an operator finds the import from that request.
    within: (image, work) => withContext({ request_id: image.request_id ?? undefined }, work),
  });
  // Every line, metric and event of one object's import carries its image.
  const observed: Importer = {
    ...importer,
    importStagedObject: (key, versionId) =>
      withContext({ image_id: imageIdFromStagingKey(key) }, async () => {
        const started = performance.now();
        try {
          const outcome: ImportOutcome = await importer.importStagedObject(key, versionId);
          recordImport(outcome, performance.now() - started, store);
          return outcome;
        } catch (err) {
          // Given back to be retried (the core logged why).
          store.metrics.add("Imports", MetricUnit.Count, 1, { outcome: "retried", reason: "TRANSIENT" });
          throw err;
        }
      }),
  };
  return {
    /** Imports every object an S3 (or MinIO) notification names; throws to have the event retried. */
    handle: (event: unknown): Promise<ImportOutcome[]> => {
      // md5's and sha512's threads start while the first import heads the object and takes its lease,
      // not in the module's init (its budget) nor when the first digest is asked for.
      hashThreads.prestart(2);
      return importStorageEvents(
        { importer: observed, bucket: config.bucket, log: store.log },
        parseStorageEvent(event),
      );
    },
  };
}
