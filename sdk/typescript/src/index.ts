export { Client, EventStream, duration } from "./client.js";
export type { ClientOptions } from "./client.js";
export { Terminal, TERMINAL_PROTOCOL, KEY_PROTOCOL_PREFIX, keyProtocol } from "./terminal.js";
export type { WebSocketConstructor } from "./terminal.js";
export * from "./errors.js";
export type * from "./types.js";
export { ROUTES, NOT_WRAPPED } from "./routes.js";
