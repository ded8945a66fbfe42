"use strict";
// osls plugin: builds the functions' bundles (scripts/build.mjs) right before osls looks for their
// artifacts, so `osls package`, `osls deploy` and `osls deploy function` always ship the current
// source and never a dist/ left over from an earlier build.
//
// Every function whose `package.artifact` is `dist/<name>.zip` is rebuilt from
// functions/handlers/<name>.ts; a function with any other artifact is left alone. `osls deploy
// --package <dir>` deploys what an earlier `osls package` built and packaged, so it builds nothing.
const path = require("node:path");
const { pathToFileURL } = require("node:url");

const ARTIFACT = /^(?:\.\/)?dist\/([a-z0-9-]+)\.zip$/;

class HangarBuildPlugin {
  constructor(serverless, options, { log } = {}) {
    this.serverless = serverless;
    this.options = options;
    this.log = log ?? { notice: console.log };
    this.hooks = {
      // `package` and `deploy` (which runs the package lifecycle unless given --package).
      "before:package:createDeploymentArtifacts": () => this.build(this.functionNames()),
      // `deploy function -f <name>` packages only that function.
      "before:package:function:package": () => this.build([this.options.function]),
    };
  }

  /** The handler each function deploys, keyed by function name, for artifacts under dist/. */
  handlers() {
    const handlers = new Map();
    for (const name of this.serverless.service.getAllFunctions()) {
      const artifact = this.serverless.service.getFunction(name).package?.artifact;
      const match = typeof artifact === "string" ? ARTIFACT.exec(artifact) : null;
      if (match) handlers.set(name, match[1]);
    }
    return handlers;
  }

  functionNames() {
    return [...this.handlers().keys()];
  }

  async build(functionNames) {
    const handlers = this.handlers();
    const names = [...new Set(functionNames.map((f) => handlers.get(f)).filter(Boolean))];
    if (names.length === 0) return;
    const script = path.join(this.serverless.serviceDir, "scripts", "build.mjs");
    const { buildHandlers } = await import(pathToFileURL(script).href);
    const started = Date.now();
    await buildHandlers(names);
    this.log.notice(`Built ${names.join(", ")} from functions/handlers/ in ${Date.now() - started} ms`);
  }
}

module.exports = HangarBuildPlugin;
