import { subscribe } from "node:diagnostics_channel";
import { GetObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { partCopyChannel } from "../../../functions/adapters/s3/part-copy.ts";
import { getStack, s3Client } from "./stack.ts";

/** A client of the stack's storage that counts the commands it sends, by name. */
export function countingClient(): { client: S3Client; sent: Map<string, number> } {
  const client = s3Client();
  const sent = new Map<string, number>();
  client.middlewareStack.add(
    (next, context) => (args) => {
      const name = context.commandName ?? "?";
      sent.set(name, (sent.get(name) ?? 0) + 1);
      return next(args);
    },
    { step: "initialize", name: "countCommands" },
  );
  // Part copies are signed and sent by Hangar itself, outside the SDK's middleware: counted as they go.
  subscribe(partCopyChannel.name, (message) => {
    if ((message as { client?: unknown }).client !== client) return;
    sent.set("UploadPartCopyCommand", (sent.get("UploadPartCopyCommand") ?? 0) + 1);
  });
  return { client, sent };
}

/** The bytes of the object at `key` in the stack's bucket. */
export async function storedObject(key: string): Promise<Uint8Array> {
  const out = await s3Client().send(new GetObjectCommand({ Bucket: getStack().bucket, Key: key }));
  return (out.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray();
}
