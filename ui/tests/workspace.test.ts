import { describe, expect, it } from "vitest";
import * as Y from "yjs";

import { Workspace } from "../src/sync/workspace";

describe("workspace index", () => {
  it("creates, renames, filters and removes documents", () => {
    const ws = new Workspace(new Y.Doc());
    let n = 0;
    const a = ws.create("  Meeting   notes ", () => `a${n++}`);
    const b = ws.create("", () => `b${n++}`);
    expect(a).toBe("doc/a0");
    expect(ws.list().map((e) => e.title)).toEqual(["Meeting notes", "Untitled"]);
    ws.rename(b, "Roadmap");
    expect(ws.list("road")).toEqual([{ id: b, title: "Roadmap" }]);
    expect(ws.list("NOTES")).toEqual([{ id: a, title: "Meeting notes" }]);
    ws.remove(a);
    expect(ws.list().map((e) => e.id)).toEqual([b]);
    ws.rename("doc/missing", "x");
    expect(ws.list()).toHaveLength(1);
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
