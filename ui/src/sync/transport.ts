// What the UI needs from the Rust side, as an interface so that the sync bridge can be tested
// without Tauri. `tauri.ts` implements it over IPC.

import type { ConnectionState, DocState, Settings } from "../state/types";

export interface Unlisten {
  (): void;
}

export interface Transport {
  /** Opens a document; resolves with its full local state as one Yjs v1 update. */
  openDoc(doc: string): Promise<Uint8Array>;
  closeDoc(doc: string): Promise<void>;
  /** Sends a local Yjs update to the Rust replica (which stores and syncs it). */
  pushUpdate(doc: string, update: Uint8Array): Promise<void>;
  setAwareness(doc: string, state: unknown | null): Promise<void>;
  onRemoteUpdate(listener: (doc: string, update: Uint8Array) => void): Promise<Unlisten>;
  onAwareness(listener: (doc: string, states: Record<string, unknown>) => void): Promise<Unlisten>;
  onDocState(listener: (doc: string, state: DocState) => void): Promise<Unlisten>;
  onConnection(listener: (state: ConnectionState) => void): Promise<Unlisten>;
  /** Native menu items chosen (new, close-tab, next-tab, previous-tab, settings). */
  onMenu(listener: (item: string) => void): Promise<Unlisten>;
  /** The app is about to quit: `flush` must resolve once local edits are handed over. */
  onQuitRequested(flush: () => Promise<void>): Promise<Unlisten>;
  connectionState(): Promise<ConnectionState>;
  setTitle(title: string): Promise<void>;
  getSettings(): Promise<Settings | null>;
  saveSettings(settings: Settings): Promise<void>;
  trustFingerprint(fingerprint: string): Promise<void>;
}
