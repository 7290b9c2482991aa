// Keeps a webview Y.Doc in step with the Rust replica of the same document: local updates go
// to Rust (which stores them and sends them to the server), Rust's updates (from the server)
// are applied here. Updates carry their origin so nothing is echoed back.

import * as Y from "yjs";
import { Awareness } from "y-protocols/awareness";

import type { Transport } from "./transport";

/** Origin of transactions applying what came from the Rust side. */
export const FROM_RUST = "rust";

/** Pushes to the Rust side not yet acknowledged by it, across all documents. */
const inFlight = new Set<Promise<void>>();

/** Resolves once every update handed to the Rust side so far has been taken (stored). */
export async function flushPushes(): Promise<void> {
  await Promise.allSettled([...inFlight]);
}

export class DocBridge {
  readonly ydoc = new Y.Doc();
  readonly awareness = new Awareness(this.ydoc);
  readonly text: Y.Text = this.ydoc.getText("content");
  private readonly remoteClients = new Set<number>();

  constructor(
    readonly docId: string,
    private readonly transport: Transport,
  ) {
    this.ydoc.on("update", (update: Uint8Array, origin: unknown) => {
      if (origin === FROM_RUST) return;
      const push = this.transport.pushUpdate(this.docId, update);
      inFlight.add(push);
      void push.finally(() => inFlight.delete(push));
    });
    this.awareness.on("change", (_changes: unknown, origin: unknown) => {
      if (origin === "local") void this.transport.setAwareness(this.docId, this.awareness.getLocalState());
    });
  }

  /** Loads the document's current state from the Rust side. */
  async start(): Promise<void> {
    const state = await this.transport.openDoc(this.docId);
    Y.applyUpdate(this.ydoc, state, FROM_RUST);
  }

  applyRemote(update: Uint8Array): void {
    Y.applyUpdate(this.ydoc, update, FROM_RUST);
  }

  /** Replaces the other clients' presence with `states` (client ID → state). */
  applyAwareness(states: Record<string, unknown>): void {
    const added: number[] = [];
    const updated: number[] = [];
    const removed: number[] = [];
    const seen = new Set<number>();
    for (const [key, state] of Object.entries(states)) {
      const client = Number(key);
      if (client === this.ydoc.clientID) continue;
      seen.add(client);
      (this.remoteClients.has(client) ? updated : added).push(client);
      this.remoteClients.add(client);
      this.awareness.states.set(client, state as Record<string, unknown>);
    }
    for (const client of [...this.remoteClients]) {
      if (!seen.has(client)) {
        this.remoteClients.delete(client);
        this.awareness.states.delete(client);
        removed.push(client);
      }
    }
    if (added.length + updated.length + removed.length > 0) {
      this.awareness.emit("change", [{ added, updated, removed }, "remote"]);
    }
  }

  /** The other users present: their names and colours. */
  people(): { name: string; color: string }[] {
    const people: { name: string; color: string }[] = [];
    for (const client of this.remoteClients) {
      const state = this.awareness.states.get(client) as { user?: { name?: string; color?: string } } | undefined;
      if (state?.user?.name) people.push({ name: state.user.name, color: state.user.color ?? "#888" });
    }
    return people;
  }

  async close(): Promise<void> {
    this.awareness.setLocalState(null);
    this.awareness.destroy();
    await this.transport.closeDoc(this.docId);
    this.ydoc.destroy();
  }
}
