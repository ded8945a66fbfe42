// serverless.yml reads the fan-out definition through this file, as the exact text of
// fanout.asl.json: `${file(...json)}` would parse it, and osls drops JSON nulls ("ResultPath": null
// discards a state's result; without it the result replaces the state's input).
const { readFileSync } = require("node:fs");
const path = require("node:path");

module.exports = () => readFileSync(path.join(__dirname, "fanout.asl.json"), "utf8");
