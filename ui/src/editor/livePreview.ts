// The live-preview Markdown surface: headings sized, emphasis, strong, code, links and quotes
// styled, and the markup characters (#, *, `, [](url), >) hidden except on the lines the
// cursor or a selection is on, where they show, dimmed, to be edited. It is decorations only:
// the text stays plain Markdown, so collaboration, undo and what is stored are untouched.

import { HighlightStyle, syntaxHighlighting, syntaxTree } from "@codemirror/language";
import type { EditorState, Extension, Range } from "@codemirror/state";
import { Decoration, type DecorationSet, EditorView, ViewPlugin, type ViewUpdate, WidgetType } from "@codemirror/view";
import type { SyntaxNodeRef } from "@lezer/common";
import { tags } from "@lezer/highlight";

const PROSE = 'system-ui, -apple-system, "Segoe UI", "Noto Sans", "DejaVu Sans", sans-serif';
const MONO = 'ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", "Liberation Mono", monospace';

/** Line classes for block nodes, by node name. */
const LINE_CLASSES: Record<string, string> = {
  ATXHeading1: "cm-lp-h1",
  ATXHeading2: "cm-lp-h2",
  ATXHeading3: "cm-lp-h3",
  ATXHeading4: "cm-lp-h4",
  ATXHeading5: "cm-lp-h5",
  ATXHeading6: "cm-lp-h6",
  SetextHeading1: "cm-lp-h1",
  SetextHeading2: "cm-lp-h2",
  Blockquote: "cm-lp-quote",
  FencedCode: "cm-lp-code",
  CodeBlock: "cm-lp-code",
};

/** Marks hidden away from the cursor, with what they sit in. */
const INLINE_MARKS: Record<string, string[]> = {
  EmphasisMark: ["Emphasis", "StrongEmphasis"],
  CodeMark: ["InlineCode"],
  StrikethroughMark: ["Strikethrough"],
};

const hidden = Decoration.replace({});

/** A bullet list's "-", "*" or "+", shown as a bullet. */
class BulletWidget extends WidgetType {
  override eq(): boolean {
    return true;
  }
  toDOM(): HTMLElement {
    const bullet = document.createElement("span");
    bullet.className = "cm-lp-bullet";
    bullet.textContent = "•";
    return bullet;
  }
}

const bullet = Decoration.replace({ widget: new BulletWidget() });

/** A range of text the preview hides or shows as a bullet, or a line it styles. */
export interface PreviewPart {
  kind: "hide" | "bullet" | "line";
  from: number;
  to: number;
  className?: string;
}

/** The lines (by number) that hold a cursor or part of a selection: their markup shows. */
function activeLines(state: EditorState): Set<number> {
  const lines = new Set<number>();
  for (const range of state.selection.ranges) {
    const first = state.doc.lineAt(range.from).number;
    const last = state.doc.lineAt(range.to).number;
    for (let n = first; n <= last; n++) lines.add(n);
  }
  return lines;
}

/**
 * What the preview does to the text in `ranges` (the visible part of the document): which
 * ranges it hides and which lines it gives a class.
 */
export function previewParts(state: EditorState, ranges: readonly { from: number; to: number }[]): PreviewPart[] {
  const parts: PreviewPart[] = [];
  const active = activeLines(state);
  const styledLines = new Set<string>();
  const doc = state.doc;
  const onActiveLine = (pos: number) => active.has(doc.lineAt(pos).number);
  const hide = (from: number, to: number, kind: "hide" | "bullet" = "hide") => {
    // A replaced range may not cross a line break: what follows one stays shown.
    const end = Math.min(to, doc.lineAt(from).to);
    if (end > from && !onActiveLine(from)) parts.push({ kind, from, to: end });
  };

  const visit = (node: SyntaxNodeRef) => {
    const name = node.name;
    const lineClass = LINE_CLASSES[name];
    if (lineClass) {
      // Every line of the block, once (a block may span two visible ranges).
      for (let pos = node.from; pos <= node.to; ) {
        const line = doc.lineAt(pos);
        const key = `${line.from}:${lineClass}`;
        if (!styledLines.has(key)) {
          styledLines.add(key);
          parts.push({ kind: "line", from: line.from, to: line.from, className: lineClass });
        }
        pos = line.to + 1;
      }
    }
    const parent = node.node.parent?.name ?? "";
    if (name === "HeaderMark" && parent.startsWith("ATXHeading")) {
      // "## " before the title, and a closing "##" after it: hidden with their spaces.
      const line = doc.lineAt(node.from);
      const text = line.text;
      let end = node.to - line.from;
      while (end < text.length && text[end] === " ") end++;
      let start = node.from - line.from;
      while (start > 0 && text[start - 1] === " " && node.from > node.node.parent!.from) start--;
      hide(line.from + start, line.from + end);
    } else if (name === "QuoteMark") {
      const line = doc.lineAt(node.from);
      const after = node.to < line.to && line.text[node.to - line.from] === " " ? node.to + 1 : node.to;
      hide(node.from, after);
    } else if (name === "ListMark" && node.node.parent?.parent?.name === "BulletList") {
      hide(node.from, node.to, "bullet");
    } else if (INLINE_MARKS[name]?.includes(parent)) {
      hide(node.from, node.to);
    } else if (name === "Link" || name === "Image") {
      hideLinkMarkup(node, hide);
      return false;
    } else if (name === "Autolink") {
      const marks = node.node.getChildren("LinkMark");
      for (const mark of marks) hide(mark.from, mark.to);
      return false;
    }
    return true;
  };

  const tree = syntaxTree(state);
  for (const { from, to } of ranges) tree.iterate({ from, to, enter: visit });
  return parts;
}

/** `[text](url "title")`: hides "[" and everything from "]" on, keeping the text. */
function hideLinkMarkup(node: SyntaxNodeRef, hide: (from: number, to: number) => void): void {
  const marks = node.node.getChildren("LinkMark");
  const open = marks[0];
  const close = marks[1];
  // A reference without its closing bracket, or an image: leave it as written.
  if (node.name === "Image" || !open || !close) return;
  hide(open.from, open.to);
  hide(close.from, node.to);
  // Emphasis inside the link text is hidden like anywhere else.
  const cursor = node.node.cursor();
  if (cursor.firstChild()) {
    do {
      if (cursor.name === "Emphasis" || cursor.name === "StrongEmphasis" || cursor.name === "InlineCode") {
        for (const mark of cursor.node.getChildren(cursor.name === "InlineCode" ? "CodeMark" : "EmphasisMark")) {
          hide(mark.from, mark.to);
        }
      }
    } while (cursor.nextSibling());
  }
}

function buildDecorations(view: EditorView): DecorationSet {
  const ranges: Range<Decoration>[] = [];
  for (const part of previewParts(view.state, view.visibleRanges)) {
    if (part.kind === "hide") ranges.push(hidden.range(part.from, part.to));
    else if (part.kind === "bullet") ranges.push(bullet.range(part.from, part.to));
    else ranges.push(Decoration.line({ class: part.className! }).range(part.from));
  }
  return Decoration.set(ranges, true);
}

const previewPlugin = ViewPlugin.fromClass(
  class {
    decorations: DecorationSet;
    constructor(view: EditorView) {
      this.decorations = buildDecorations(view);
    }
    update(update: ViewUpdate) {
      if (
        update.docChanged ||
        update.viewportChanged ||
        update.selectionSet ||
        syntaxTree(update.startState) !== syntaxTree(update.state)
      ) {
        this.decorations = buildDecorations(update.view);
      }
    }
  },
  { decorations: (plugin) => plugin.decorations },
);

const markdownStyle = HighlightStyle.define([
  { tag: tags.heading, fontWeight: "700" },
  { tag: tags.strong, fontWeight: "700" },
  { tag: tags.emphasis, fontStyle: "italic" },
  { tag: tags.strikethrough, textDecoration: "line-through" },
  { tag: tags.monospace, fontFamily: MONO, fontSize: "0.9em" },
  { tag: tags.link, color: "var(--link)" },
  { tag: tags.url, color: "var(--faint)" },
  { tag: tags.quote, color: "var(--muted)" },
  { tag: tags.processingInstruction, color: "var(--faint)" },
  { tag: tags.contentSeparator, color: "var(--faint)" },
  { tag: tags.labelName, color: "var(--faint)" },
]);

const surface = EditorView.theme({
  "&": { color: "var(--fg)", backgroundColor: "var(--bg)", fontSize: "16px" },
  "&.cm-focused": { outline: "none" },
  ".cm-scroller": { fontFamily: PROSE, lineHeight: "1.65" },
  ".cm-content": { maxWidth: "46em", margin: "0 auto", padding: "28px 28px 30vh", caretColor: "var(--fg)" },
  ".cm-line": { padding: "0 2px" },
  ".cm-cursor, .cm-dropCursor": { borderLeftColor: "var(--fg)" },
  "&.cm-focused > .cm-scroller > .cm-selectionLayer .cm-selectionBackground, .cm-selectionBackground": {
    backgroundColor: "var(--selection)",
  },
  ".cm-placeholder": { color: "var(--faint)" },
  ".cm-lp-h1": { fontSize: "1.85em", lineHeight: "1.3", paddingTop: "0.5em" },
  ".cm-lp-h2": { fontSize: "1.5em", lineHeight: "1.3", paddingTop: "0.45em" },
  ".cm-lp-h3": { fontSize: "1.25em", lineHeight: "1.35", paddingTop: "0.4em" },
  ".cm-lp-h4": { fontSize: "1.1em", paddingTop: "0.3em" },
  ".cm-lp-h5": { fontSize: "1em" },
  ".cm-lp-h6": { fontSize: "0.95em", color: "var(--muted)" },
  ".cm-lp-bullet": { color: "var(--muted)" },
  ".cm-lp-quote": { borderLeft: "3px solid var(--quote)", paddingLeft: "14px", color: "var(--muted)" },
  ".cm-lp-code": { fontFamily: MONO, fontSize: "0.88em", backgroundColor: "var(--code-bg)", padding: "0 12px" },
  ".cm-panels": { backgroundColor: "var(--panel)", color: "var(--fg)" },
  // Remote cursors carry their person's name at all times, not only under the mouse.
  ".cm-ySelectionInfo": { fontFamily: PROSE, opacity: "1", borderRadius: "3px 3px 3px 0" },
});

/** The live-preview surface: decorations, the Markdown highlight style and the theme. */
export function livePreview(): Extension {
  return [previewPlugin, syntaxHighlighting(markdownStyle), surface];
}
