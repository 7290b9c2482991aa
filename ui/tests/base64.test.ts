import { describe, expect, it } from "vitest";

import { fromBase64, toBase64 } from "../src/sync/base64";

describe("base64", () => {
  it("round-trips every byte value and large buffers", () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    expect(fromBase64(toBase64(all))).toEqual(all);
    const big = Uint8Array.from({ length: 200_000 }, (_, i) => (i * 7) & 0xff);
    expect(fromBase64(toBase64(big))).toEqual(big);
    expect(toBase64(new Uint8Array())).toBe("");
  });
});
