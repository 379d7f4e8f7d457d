"""The ecosystem's own protocols on Tether's durable runs: AG-UI (`ag_ui`) and the Vercel AI SDK's UI
message stream (`ai_sdk`). Each translates its requests into engine calls and the thread's log into its
stream; `history` says which of a client's messages are new, `streaming` sends the translated frames."""
