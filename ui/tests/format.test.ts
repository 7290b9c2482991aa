import { describe, expect, it } from "vitest";

import { describeConnection, describeDoc, formatBytes, validateServerUrl } from "../src/state/format";

describe("connection labels", () => {
  it("says connected with the round trip", () => {
    expect(describeConnection({ kind: "connected", rttMs: 12 })).toEqual({ text: "Connected · 12 ms", tone: "ok" });
    expect(describeConnection({ kind: "connected", rttMs: null }).text).toBe("Connected");
  });
  it("says when and why it reconnects", () => {
    const label = describeConnection({ kind: "reconnecting", retryInMs: 4200, attempt: 3, lastCode: 1006, reason: "connection lost" });
    expect(label.text).toBe("Reconnecting in 4 s (attempt 3) · connection lost");
    expect(label.tone).toBe("warn");
    const noReason = describeConnection({ kind: "reconnecting", retryInMs: 300, attempt: 1, lastCode: 1001, reason: "" });
    expect(noReason.text).toBe("Reconnecting in <1 s (attempt 1) · code 1001");
  });
  it("marks auth and trust failures as errors", () => {
    expect(describeConnection({ kind: "authFailed", reason: "401" }).tone).toBe("error");
    expect(describeConnection({ kind: "untrusted", fingerprint: "AB", reason: "x" }).tone).toBe("error");
  });
});

describe("document labels", () => {
  it("distinguishes saved from pending", () => {
    expect(describeDoc({ kind: "synced", pending: 0 }).text).toBe("Saved on server");
    expect(describeDoc({ kind: "synced", pending: 2 }).text).toBe("Saving 2 changes…");
    expect(describeDoc({ kind: "offline", pending: 1 }).text).toBe("Offline · 1 change kept locally");
    expect(describeDoc({ kind: "syncing", received: 2048 }).text).toBe("Syncing… 2.0 KB");
    expect(describeDoc({ kind: "failed", code: 4403, reason: "forbidden" }).tone).toBe("error");
  });
  it("formats sizes", () => {
    expect(formatBytes(10)).toBe("10 B");
    expect(formatBytes(3 * 1024 * 1024)).toBe("3.0 MB");
  });
});

describe("server URL validation", () => {
  it("accepts ws and wss URLs", () => {
    expect(validateServerUrl("wss://localhost:7700/ws")).toBeNull();
    expect(validateServerUrl("ws://127.0.0.1:7700/ws")).toBeNull();
  });
  it("explains what is wrong", () => {
    expect(validateServerUrl("localhost:7700")).toMatch(/wss:\/\//);
    expect(validateServerUrl("https://example.org")).toMatch(/must start with wss/);
    expect(validateServerUrl("not a url")).toMatch(/Not a URL/);
  });
});
