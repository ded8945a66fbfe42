import type { ImportTrigger } from "../../core/ports.ts";
import { LambdaAsyncInvoker } from "./lambda-invoke.ts";

/**
 * An object key as S3 writes it into event notifications: form-style URL encoding (`+` for a space) with
 * `/` left as it is. The importer decodes either form.
 */
const encodeEventKey = (key: string): string =>
  encodeURIComponent(key).replace(/%20/g, "+").replace(/%2F/gi, "/");

/**
 * Hands a staged upload to the importer function again: an asynchronous invocation with the
 * `ObjectCreated:Put` notification S3 sends for it, so the importer runs exactly as for an upload, with
 * Lambda's retries and failure destination.
 */
export class LambdaImportTrigger implements ImportTrigger {
  private readonly invoker: LambdaAsyncInvoker;

  constructor(
    functionName: string,
    private readonly bucket: string,
    private readonly region: string,
    endpoint?: string,
  ) {
    this.invoker = new LambdaAsyncInvoker(functionName, region, endpoint);
  }

  async importStaged(key: string): Promise<void> {
    await this.invoker.invoke({
      Records: [
        {
          eventVersion: "2.1",
          eventSource: "aws:s3",
          awsRegion: this.region,
          eventTime: new Date().toISOString(),
          eventName: "ObjectCreated:Put",
          s3: {
            s3SchemaVersion: "1.0",
            bucket: { name: this.bucket, arn: `arn:aws:s3:::${this.bucket}` },
            object: { key: encodeEventKey(key) },
          },
        },
      ],
    });
  }
}
