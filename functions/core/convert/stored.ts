/**
 * Bytes of the output that are the source file's own bytes, verbatim. The converter marks each chunk
 * that is a view of one stored run (a qcow2's clusters laid out back to back, a raw batch, a VHDX block)
 * with that run's offset in the source file; a consumer that can copy inside storage (the store's
 * writer, with UploadPartCopy from the uploaded object) then need not send them. Marks are by chunk
 * object: a new view of a marked chunk is not marked.
 */

const offsets = new WeakMap<Uint8Array, number>();

/** Marks `chunk` as the source's bytes at `offset` (or, with `undefined`, as not known to be). */
export function markStored(chunk: Uint8Array, offset: number | undefined): void {
  if (offset === undefined) offsets.delete(chunk);
  else offsets.set(chunk, offset);
}

/** Where in the source file `chunk`'s bytes are stored verbatim, when the converter knows. */
export function storedAt(chunk: Uint8Array): number | undefined {
  return offsets.get(chunk);
}
