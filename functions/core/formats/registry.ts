import type { FormatModule } from "./format-module.ts";
import { isoFormat } from "./iso.ts";
import { qcow2Format } from "./qcow2.ts";
import { vhdFormat } from "./vhd.ts";

/**
 * Every format the inspector tries, in order. raw is not listed: it is what remains when none of
 * these matches. More than one match is a polyglot and is refused.
 */
export const FORMAT_MODULES: readonly FormatModule[] = [qcow2Format, vhdFormat, isoFormat];
