import type { FormatModule } from "./format-module.ts";
import { isoFormat } from "./iso.ts";
import { luksFormat } from "./luks.ts";
import { qcow2Format } from "./qcow2.ts";
import { vdiFormat } from "./vdi.ts";
import { vhdFormat } from "./vhd.ts";
import { vhdxFormat } from "./vhdx.ts";
import { vmdkFormat } from "./vmdk.ts";

/**
 * Every format the inspector tries, in order. raw is not listed: it is what remains when none of
 * these matches. More than one match is a polyglot and is refused, so the order only decides
 * the order of the names in that message.
 */
export const FORMAT_MODULES: readonly FormatModule[] = [
  qcow2Format,
  vmdkFormat,
  vhdxFormat,
  vhdFormat,
  vdiFormat,
  luksFormat,
  isoFormat,
];
