import { describe, expect, it } from "vitest";
import * as Y from "yjs";

import type { ConnectionState, DocState, Settings } from "../src/state/types";
import { DocBridge, flushPushes } from "../src/sync/bridge";
import type { Transport } from "../src/sync/transport";

/** A stand-in for the Rust side: one replica per document, relaying to every bridge. */
class FakeRust implements Transport {
  readonly replicas = new Map<string, Y.Doc>();
  readonly pushed: Uint8Array[] = [];
  readonly awareness: (unknown | null)[] = [];
  private listeners: ((doc: string, update: Uint8Array) => void)[] = [];

  replica(doc: string): Y.Doc {
    let replica = this.replicas.get(doc);
    if (!replica) {
      replica = new Y.Doc();
      this.replicas.set(doc, replica);
    }
    return replica;
  }
  async openDoc(doc: string) {
    return Y.encodeStateAsUpdate(this.replica(doc));
  }
  async closeDoc() {}
  async pushUpdate(doc: string, update: Uint8Array) {
    this.pushed.push(update);
    Y.applyUpdate(this.replica(doc), update, "webview");
  }
  async setAwareness(_doc: string, state: unknown | null) {
    this.awareness.push(state);
  }
  /** A remote edit arriving from the server. */
  remoteEdit(doc: string, edit: (text: Y.Text) => void) {
    const replica = this.replica(doc);
    const before = Y.encodeStateVector(replica);
    edit(replica.getText("content"));
    const update = Y.encodeStateAsUpdate(replica, before);
    for (const listener of this.listeners) listener(doc, update);
  }
  async onRemoteUpdate(listener: (doc: string, update: Uint8Array) => void) {
    this.listeners.push(listener);
    return () => {};
  }
  async onAwareness() { return () => {}; }
  async onDocState(_l: (doc: string, state: DocState) => void) { return () => {}; }
  async onConnection(_l: (state: ConnectionState) => void) { return () => {}; }
  async onMenu() { return () => {}; }
  async onQuitRequested() { return () => {}; }
  async connectionState(): Promise<ConnectionState> { return { kind: "closed" }; }
  async setTitle() {}
  async getSettings(): Promise<Settings | null> { return null; }
  async saveSettings() {}
  async trustFingerprint() {}
  // The bridge never asks for versions, the trash or files.
  listVersions = unused;
  createVersion = unused;
  versionText = unused;
  restoreVersion = unused;
  trashDoc = unused;
  untrashDoc = unused;
  listTrash = unused;
  purgeDoc = unused;
  exportMarkdown = unused;
  importMarkdown = unused;
  readMarkdownFiles = unused;
  async onFilesDropped() { return () => {}; }
}

function unused(): never {
  throw new Error("not used by the bridge");
}

describe("DocBridge", () => {
  it("loads the Rust replica's state, sends local edits and applies remote ones without echo", async () => {
    const rust = new FakeRust();
    rust.replica("d").getText("content").insert(0, "stored");
    const bridge = new DocBridge("d", rust);
    await rust.onRemoteUpdate((doc, update) => doc === "d" && bridge.applyRemote(update));
    await bridge.start();
    expect(bridge.text.toString()).toBe("stored");
    expect(rust.pushed).toHaveLength(0);

    bridge.text.insert(0, "my ");
    expect(rust.pushed).toHaveLength(1);
    expect(rust.replica("d").getText("content").toString()).toBe("my stored");

    rust.remoteEdit("d", (text) => text.insert(text.length, "!"));
    expect(bridge.text.toString()).toBe("my stored!");
    expect(rust.pushed).toHaveLength(1);
  });

  it("flushes pushes still on their way to the Rust side", async () => {
    const rust = new FakeRust();
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const slow = rust.pushUpdate.bind(rust);
    rust.pushUpdate = async (doc, update) => {
      await gate;
      await slow(doc, update);
    };
    const bridge = new DocBridge("d", rust);
    bridge.text.insert(0, "last words");
    let flushed = false;
    const flush = flushPushes().then(() => (flushed = true));
    await Promise.resolve();
    expect(flushed).toBe(false);
    release();
    await flush;
    expect(rust.replica("d").getText("content").toString()).toBe("last words");
  });

  it("tracks other people's presence and forwards our own", async () => {
    const rust = new FakeRust();
    const bridge = new DocBridge("d", rust);
    bridge.awareness.setLocalStateField("user", { name: "Me", color: "#000" });
    expect(rust.awareness.at(-1)).toEqual({ user: { name: "Me", color: "#000" } });
    bridge.applyAwareness({ "7": { user: { name: "Alice", color: "#f00" } } });
    expect(bridge.people()).toEqual([{ name: "Alice", color: "#f00" }]);
    bridge.applyAwareness({});
    expect(bridge.people()).toEqual([]);
    expect(bridge.awareness.states.has(7)).toBe(false);
  });
});
