import { markdown, markdownLanguage } from "@codemirror/lang-markdown";
import { ensureSyntaxTree } from "@codemirror/language";
import { EditorSelection, EditorState } from "@codemirror/state";
import { describe, expect, it } from "vitest";

import { previewParts } from "../src/editor/livePreview";

const TEXT = [
  "# Agenda", // line 1
  "",
  "Some **bold**, *italic*, `code` and [a link](https://example.org \"t\").", // line 3
  "> quoted", // line 4
  "",
  "~~gone~~ and <https://example.org>", // line 6
  "```rust", // line 7
  "let x = 1;",
  "```",
  "",
  "- first", // line 11
  "1. numbered",
].join("\n");

function state(cursor: number): EditorState {
  const s = EditorState.create({
    doc: TEXT,
    selection: EditorSelection.cursor(cursor),
    extensions: [markdown({ base: markdownLanguage })],
  });
  ensureSyntaxTree(s, s.doc.length, 5000);
  return s;
}

/** The text each hidden range covers, in order. */
function hiddenTexts(s: EditorState, kind: "hide" | "bullet" = "hide"): string[] {
  return previewParts(s, [{ from: 0, to: s.doc.length }])
    .filter((p) => p.kind === kind)
    .sort((a, b) => a.from - b.from)
    .map((p) => s.doc.sliceString(p.from, p.to));
}

function lineClasses(s: EditorState): [number, string][] {
  return previewParts(s, [{ from: 0, to: s.doc.length }])
    .filter((p) => p.kind === "line")
    .map((p) => [s.doc.lineAt(p.from).number, p.className!] as [number, string])
    .sort((a, b) => a[0] - b[0]);
}

describe("the live preview", () => {
  it("hides the markup on every line the cursor is not on", () => {
    const s = state(TEXT.indexOf("let x"));
    expect(hiddenTexts(s)).toEqual([
      "# ",
      "**",
      "**",
      "*",
      "*",
      "`",
      "`",
      "[",
      '](https://example.org "t")',
      "> ",
      "~~",
      "~~",
      "<",
      ">",
    ]);
  });

  it("shows the markup of the line being edited", () => {
    const s = state(TEXT.indexOf("Some"));
    const hidden = hiddenTexts(s);
    expect(hidden).toContain("# ");
    expect(hidden).not.toContain("**");
    expect(hidden).not.toContain("[");
    expect(hidden).toContain("> ");
  });

  it("shows the markup of every line a selection touches", () => {
    const s = EditorState.create({
      doc: TEXT,
      selection: EditorSelection.range(0, TEXT.indexOf("quoted")),
      extensions: [markdown({ base: markdownLanguage })],
    });
    ensureSyntaxTree(s, s.doc.length, 5000);
    expect(hiddenTexts(s)).toEqual(["~~", "~~", "<", ">"]);
  });

  it("sizes headings and marks quotes and code blocks, line by line", () => {
    const s = state(0);
    expect(lineClasses(s)).toEqual([
      [1, "cm-lp-h1"],
      [4, "cm-lp-quote"],
      [7, "cm-lp-code"],
      [8, "cm-lp-code"],
      [9, "cm-lp-code"],
    ]);
  });

  it("shows a bullet list's markers as bullets, and numbers as they are", () => {
    expect(hiddenTexts(state(0), "bullet")).toEqual(["-"]);
    expect(hiddenTexts(state(TEXT.indexOf("first")), "bullet")).toEqual([]);
  });

  it("never hides across a line break", () => {
    const s = state(0);
    for (const part of previewParts(s, [{ from: 0, to: s.doc.length }])) {
      expect(s.doc.sliceString(part.from, part.to)).not.toContain("\n");
    }
  });
});
