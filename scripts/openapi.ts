import { writeFileSync } from "node:fs";
import { openApiDocument } from "../functions/http/openapi.ts";

// docs/openapi.json is generated, never edited: a unit test fails when it differs from the code's schemas.
const target = new URL("../docs/openapi.json", import.meta.url);
writeFileSync(target, `${JSON.stringify(openApiDocument(), null, 2)}\n`);
console.log(`wrote ${target.pathname}`);
