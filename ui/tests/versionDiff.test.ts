import { describe, expect, it } from "vitest";

import { changeCount, versionDiff, versionLabel } from "../src/state/versionDiff";

describe("version diff", () => {
  it("marks the lines only the version has and those only the current text has", () => {
    const now = "# Plan\n\nShip on Monday.\nInvite Grace.\n";
    const then = "# Plan\n\nShip on Friday.\nInvite Grace.\n";
    const lines = versionDiff(now, then);
    expect(lines).toEqual([
      { kind: "same", text: "# Plan" },
      { kind: "same", text: "" },
      { kind: "onlyNow", text: "Ship on Monday." },
      { kind: "onlyInVersion", text: "Ship on Friday." },
      { kind: "same", text: "Invite Grace." },
    ]);
    expect(changeCount(lines)).toEqual({ added: 1, removed: 1 });
  });

  it("treats a last line without a newline like the same line followed by more", () => {
    expect(versionDiff("a\nb\nc", "a\nb")).toEqual([
      { kind: "same", text: "a" },
      { kind: "same", text: "b" },
      { kind: "onlyNow", text: "c" },
    ]);
  });

  it("reports no change for equal texts, and handles empty ones", () => {
    expect(changeCount(versionDiff("a\nb", "a\nb"))).toEqual({ added: 0, removed: 0 });
    expect(versionDiff("", "only then")).toEqual([{ kind: "onlyInVersion", text: "only then" }]);
    expect(versionDiff("only now", "")).toEqual([{ kind: "onlyNow", text: "only now" }]);
  });

  it("labels versions by what made them", () => {
    const base = { id: 1, createdMs: 0, name: "", authors: [], size: 1 };
    expect(versionLabel({ ...base, kind: "named", name: "Draft" })).toBe("Draft");
    expect(versionLabel({ ...base, kind: "auto" })).toBe("Automatic version");
    expect(versionLabel({ ...base, kind: "beforeRestore" })).toBe("Before a restore");
  });
});
