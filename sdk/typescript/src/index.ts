export { Client, EventStream, duration } from "./client.js";
export type { ClientOptions } from "./client.js";
export * from "./errors.js";
export type * from "./types.js";
export { ROUTES, NOT_WRAPPED } from "./routes.js";
