// Shared by the Node side of `./dev bench worker`: clocks, environment, files.
"use strict";

const fs = require("fs");

// One clock for every process of the run: CLOCK_MONOTONIC is system-wide on
// Linux, so a generator's commit time and a handler's start time taken in two
// processes can be subtracted. `wallMs` is for joining with logs that carry
// wall-clock timestamps only (the Rust worker's JSON logs).
const monoNs = () => process.hrtime.bigint();
const wallMs = () => performance.timeOrigin + performance.now();

function env(name, fallback) {
  const v = process.env[name];
  if (v === undefined || v === "") {
    if (fallback === undefined) throw new Error(`${name} is not set`);
    return fallback;
  }
  return v;
}
const envInt = (name, fallback) => {
  const v = Number(env(name, fallback === undefined ? undefined : String(fallback)));
  if (!Number.isFinite(v)) throw new Error(`${name} is not a number`);
  return v;
};

// Handler-start trace: one "id<TAB>mono_ns<TAB>wall_ms" line per job, kept in
// memory while the worker runs and written when it is told to stop, so the
// bench measures the handler and not a file write per job.
function startTrace(path) {
  const rows = [];
  return {
    record(id) {
      if (path) rows.push(`${id}\t${monoNs()}\t${wallMs().toFixed(3)}`);
    },
    flush() {
      if (path) fs.writeFileSync(path, rows.length ? rows.join("\n") + "\n" : "");
    },
  };
}

// Resolves on SIGTERM or SIGINT, once.
const stopSignal = () =>
  new Promise((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });

module.exports = { monoNs, wallMs, env, envInt, startTrace, stopSignal };
