import { describe, expect, it } from "vitest";
import * as Y from "yjs";

import { Workspace } from "../src/sync/workspace";

describe("workspace index", () => {
  it("creates, renames, filters and trashes documents", () => {
    const ws = new Workspace(new Y.Doc());
    let n = 0;
    const a = ws.create("  Meeting   notes ", () => `a${n++}`);
    const b = ws.create("", () => `b${n++}`);
    expect(a).toBe("doc/a0");
    expect(ws.list().map((e) => e.title)).toEqual(["Meeting notes", "Untitled"]);
    ws.rename(b, "Roadmap");
    expect(ws.list("road")).toEqual([{ id: b, title: "Roadmap" }]);
    expect(ws.list("NOTES")).toEqual([{ id: a, title: "Meeting notes" }]);
    ws.moveToTrash(a);
    expect(ws.list().map((e) => e.id)).toEqual([b]);
    expect(ws.trashedTitle(a)).toBe("Meeting notes");
    ws.rename("doc/missing", "x");
    expect(ws.list()).toHaveLength(1);
  });

  it("brings documents back from the trash and forgets purged ones", () => {
    const ws = new Workspace(new Y.Doc());
    let n = 0;
    const a = ws.create("Alpha", () => `a${n++}`);
    const b = ws.create("Beta", () => `b${n++}`);
    ws.moveToTrash(a);
    ws.moveToTrash(b);
    expect(ws.list()).toEqual([]);
    ws.restoreFromTrash(a);
    expect(ws.list()).toEqual([{ id: a, title: "Alpha" }]);
    // The server purged b by itself: the index forgets it.
    ws.forgetTrashedExcept(new Set());
    expect([...ws.trash.keys()]).toEqual([]);
    expect(ws.trashedTitle(b)).toBe(b);
  });

  it("converges between two replicas", () => {
    const one = new Y.Doc();
    const two = new Y.Doc();
    one.on("update", (u: Uint8Array) => Y.applyUpdate(two, u));
    two.on("update", (u: Uint8Array) => Y.applyUpdate(one, u));
    const left = new Workspace(one);
    const right = new Workspace(two);
    const id = left.create("Shared");
    right.rename(id, "Shared plan");
    expect(left.title(id)).toBe("Shared plan");
  });
});
