// Drives @ag-ui/client's HttpAgent, unchanged, against a Tether server, through a program of steps.
//
//   node ag_ui.mjs URL PROGRAM_JSON
//
// PROGRAM: {threadId, headers?, steps: [step…]}; each step is one runAgent call on the thread's agent:
//   {send: TEXT, runId, abortAfter?: N}  add a user message and run (abortRun() after N events)
//   {resume: {status, payload?}, runId}   answer every pending interrupt the same way
//   {runId}                               run again with a known runId (re-attach)
//   {reload: true}                        a new HttpAgent (a reloaded page): load the thread's messages,
//                                         and re-attach if a run is active
// Prints one JSON array: per step, the events the agent received, its messages and pending interrupts
// after the step, and the error it raised, if any.
import { HttpAgent } from "@ag-ui/client";

const [url, programText] = process.argv.slice(2);
const program = JSON.parse(programText);
const headers = program.headers ?? {};
const newAgent = (threadId) => new HttpAgent({ url: `${url}/v1/ag-ui`, threadId, headers });

let agent = newAgent(program.threadId);
const results = [];
for (const step of program.steps) {
  const record = { events: [] };
  results.push(record);
  try {
    let runId = step.runId;
    if (step.reload) {
      agent = newAgent(program.threadId);
      const response = await fetch(`${url}/v1/ag-ui/${encodeURIComponent(program.threadId)}`, { headers });
      record.loaded = await response.json();
      agent.setMessages(record.loaded.messages);
      runId = record.loaded.runId;
      if (!runId) continue;
    }
    if (step.send !== undefined) {
      agent.addMessage({ id: crypto.randomUUID(), role: "user", content: step.send });
    }
    const parameters = { runId };
    if (step.resume) {
      parameters.resume = agent.pendingInterrupts.map((interrupt) => ({
        interruptId: interrupt.id,
        status: step.resume.status,
        ...(step.resume.payload === undefined ? {} : { payload: step.resume.payload }),
      }));
    }
    const subscriber = {
      onEvent: ({ event }) => {
        record.events.push(event);
        if (step.abortAfter !== undefined && record.events.length === step.abortAfter) agent.abortRun();
      },
    };
    await agent.runAgent(parameters, subscriber);
  } catch (error) {
    record.error = String(error?.message ?? error);
  } finally {
    record.messages = structuredClone(agent.messages);
    record.pendingInterrupts = structuredClone(agent.pendingInterrupts);
  }
}
console.log(JSON.stringify(results));
