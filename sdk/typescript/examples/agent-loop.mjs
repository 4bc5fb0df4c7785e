// An agent loop on StacyVM, with a scripted "model" instead of an LLM.
//
// A real agent asks a model for the next tool call, runs it in the sandbox,
// and feeds the result back. ScriptedModel replays a fixed plan (write a
// program and its test, run the test, fix the bug it reveals, run it again)
// so the loop runs without a model key. Replace ScriptedModel.next with a
// call to your model and keep the rest.
//
//   STACYVM_URL=http://127.0.0.1:7423 STACYVM_API_KEY=... node agent-loop.mjs
import { Client, StacyVMError } from "../dist/index.js";

const PLAN = [
  { tool: "writeFile", path: "calc.js", content: "export const add = (a, b) => a - b;\n" },
  { tool: "writeFile", path: "test.mjs",
    content: "import { add } from './calc.js';\nif (add(2, 3) !== 5) { console.error(`add(2, 3) = ${add(2, 3)}`); process.exit(1); }\nconsole.log('tests pass');\n" },
  { tool: "exec", command: "node test.mjs" },
  // After seeing the failure, the "model" fixes the bug...
  { tool: "writeFile", path: "calc.js", content: "export const add = (a, b) => a + b;\n" },
  // ...and checks again, streaming the output.
  { tool: "execStream", command: "node test.mjs && echo done" },
  { tool: "readFile", path: "calc.js" },
  { tool: "finish" },
];

class ScriptedModel {
  constructor(plan) { this.plan = [...plan]; this.seen = []; }
  // A real model would decide from the observation; this one replays.
  async next(observation) {
    if (observation !== undefined) this.seen.push(observation);
    return this.plan.shift();
  }
}

async function runTool(client, id, step) {
  try {
    switch (step.tool) {
      case "writeFile":
        await client.writeFile(id, step.path, step.content);
        return `wrote ${step.path}`;
      case "exec": {
        const r = await client.exec(id, step.command, { timeout: "30s" });
        return `exit ${r.exit_code}\nstdout: ${r.stdout}stderr: ${r.stderr}`;
      }
      case "execStream": {
        let out = "";
        for await (const f of client.execStream(id, step.command, { timeout: "30s" })) {
          out += f.type === "chunk" ? f.data : `[exit ${f.exit_code}]`;
        }
        return out;
      }
      case "readFile":
        return await client.readText(id, step.path);
    }
  } catch (e) {
    if (e instanceof StacyVMError) return `error ${e.code}: ${e.message} (hint: ${e.hint})`;
    throw e;
  }
  return `unknown tool ${step.tool}`;
}

const client = new Client(process.env.STACYVM_URL ?? "http://127.0.0.1:7423", { apiKey: process.env.STACYVM_API_KEY });
const model = new ScriptedModel(PLAN);
await client.withSandbox({ ttl: "10m", metadata: { agent: "scripted" } }, async (sb) => {
  let observation;
  for (;;) {
    const step = await model.next(observation);
    if (step.tool === "finish") break;
    observation = await runTool(client, sb.id, step);
    console.log(`> ${step.tool} ${step.path ?? step.command}\n${observation}`);
  }
});
const ok = model.seen[2].startsWith("exit 1") && model.seen[4].endsWith("done\n[exit 0]");
console.log(ok ? "DONE" : "FAILED");
process.exitCode = ok ? 0 : 1;
