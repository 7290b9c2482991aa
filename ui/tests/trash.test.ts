import { describe, expect, it } from "vitest";
import * as Y from "yjs";

import type { TrashEntry } from "../src/state/types";
import type { Transport } from "../src/sync/transport";
import { Workspace } from "../src/sync/workspace";
import { TrashView } from "../src/views/trash";

/** Only what the trash view asks of the Rust side. */
function fakeTransport(server: Map<string, number>, calls: string[]): Transport {
  const partial: Partial<Transport> = {
    async listTrash(): Promise<TrashEntry[]> {
      calls.push("list");
      return [...server].map(([doc, at]) => ({ doc, trashedMs: at, purgeMs: at + 30 * 86_400_000 }));
    },
    async untrashDoc(doc: string) {
      calls.push(`untrash ${doc}`);
      server.delete(doc);
    },
    async purgeDoc(doc: string) {
      calls.push(`purge ${doc}`);
      server.delete(doc);
    },
  };
  return partial as Transport;
}

function titles(view: TrashView): string[] {
  return Array.from(view.root.querySelectorAll("[data-testid=trash-item] .title"), (e) => e.textContent ?? "");
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

describe("trash view", () => {
  it("lists the server's trash with the index's titles and forgets what the server purged", async () => {
    const workspace = new Workspace(new Y.Doc());
    const a = workspace.create("Alpha", () => "a");
    const b = workspace.create("Beta", () => "b");
    workspace.moveToTrash(a);
    workspace.moveToTrash(b);
    // The server still has Alpha; it purged Beta on its own.
    const server = new Map([[a, 1_000]]);
    const calls: string[] = [];
    const view = new TrashView(fakeTransport(server, calls), workspace, () => {}, async () => false);
    await view.show();
    expect(titles(view)).toEqual(["Alpha"]);
    expect(workspace.trashedTitle(b)).toBe(b);

    view.root.querySelector<HTMLButtonElement>("[data-testid=untrash-doc]")!.click();
    await settle();
    expect(calls).toContain(`untrash ${a}`);
    expect(workspace.list()).toEqual([{ id: a, title: "Alpha" }]);
    expect(view.root.querySelector("[data-testid=trash-empty]")).not.toBeNull();
  });

  it("keeps the whole trash in the index without a server", async () => {
    const workspace = new Workspace(new Y.Doc());
    const a = workspace.create("Local notes", () => "a");
    workspace.moveToTrash(a);
    const calls: string[] = [];
    const view = new TrashView(fakeTransport(new Map(), calls), workspace, () => {}, async () => true);
    await view.show();
    expect(titles(view)).toEqual(["Local notes"]);
    view.root.querySelector<HTMLButtonElement>("[data-testid=untrash-doc]")!.click();
    await settle();
    expect(calls).toEqual([]);
    expect(workspace.list()).toEqual([{ id: a, title: "Local notes" }]);
  });
});
