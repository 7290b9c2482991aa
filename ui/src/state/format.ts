// Turning states into the words and tone the status bar shows. Pure, so it is unit-tested.

import type { ConnectionState, DocState } from "./types";

export type Tone = "ok" | "busy" | "warn" | "error";

export interface Label {
  text: string;
  tone: Tone;
}

function seconds(ms: number): string {
  return ms < 1000 ? "<1 s" : `${Math.round(ms / 1000)} s`;
}

export function describeConnection(state: ConnectionState): Label {
  switch (state.kind) {
    case "connecting":
      return { text: state.attempt === 0 ? "Connecting…" : `Connecting (attempt ${state.attempt + 1})…`, tone: "busy" };
    case "connected":
      return { text: state.rttMs === null ? "Connected" : `Connected · ${state.rttMs} ms`, tone: "ok" };
    case "reconnecting":
      return {
        text: `Reconnecting in ${seconds(state.retryInMs)} (attempt ${state.attempt}) · ${state.reason || `code ${state.lastCode}`}`,
        tone: "warn",
      };
    case "authFailed":
      return { text: `Sign-in failed: ${state.reason}`, tone: "error" };
    case "untrusted":
      return { text: "The server's certificate is not trusted", tone: "error" };
    case "refused":
      return { text: `Cannot connect: ${state.reason}`, tone: "error" };
    case "localOnly":
      return { text: "Local only", tone: "ok" };
    case "closed":
      return { text: "Offline", tone: "warn" };
  }
}

export function describeDoc(state: DocState): Label {
  switch (state.kind) {
    case "offline":
      return state.pending === 0
        ? { text: "Offline", tone: "warn" }
        : { text: `Offline · ${state.pending} change${state.pending === 1 ? "" : "s"} kept locally`, tone: "warn" };
    case "syncing":
      return { text: state.received > 0 ? `Syncing… ${formatBytes(state.received)}` : "Syncing…", tone: "busy" };
    case "synced":
      return state.pending === 0
        ? { text: "Saved on server", tone: "ok" }
        : { text: `Saving ${state.pending} change${state.pending === 1 ? "" : "s"}…`, tone: "busy" };
    case "failed":
      return { text: `Not available: ${state.reason} (${state.code})`, tone: "error" };
  }
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** Checks a server URL the way the Rust side will use it; returns an error message or null. */
export function validateServerUrl(url: string): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return "Not a URL: use wss://host:port/ws";
  }
  if (parsed.protocol !== "wss:" && parsed.protocol !== "ws:") {
    return "The URL must start with wss:// (or ws:// behind a TLS proxy)";
  }
  if (!parsed.hostname) return "The URL has no host";
  return null;
}
