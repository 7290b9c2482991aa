// The editor: CodeMirror 6 with Markdown on a live-preview surface (./livePreview), bound to a
// Y.Text by y-codemirror.next. Undo and redo go through a Y.UndoManager that tracks only this
// user's edits; remote cursors come from the awareness.

import { defaultKeymap, indentWithTab } from "@codemirror/commands";
import { markdown, markdownLanguage } from "@codemirror/lang-markdown";
import { indentOnInput } from "@codemirror/language";
import { highlightSelectionMatches, searchKeymap } from "@codemirror/search";
import { EditorState } from "@codemirror/state";
import { drawSelection, dropCursor, EditorView, highlightSpecialChars, keymap, placeholder } from "@codemirror/view";
import { yCollab, yUndoManagerKeymap } from "y-codemirror.next";
import * as Y from "yjs";

import type { DocBridge } from "../sync/bridge";
import { livePreview } from "./livePreview";

export interface Editor {
  view: EditorView;
  undoManager: Y.UndoManager;
  destroy(): void;
}

export function createEditor(parent: HTMLElement, bridge: DocBridge): Editor {
  // Only changes made through this editor (the binding's origin) are undoable here.
  const undoManager = new Y.UndoManager(bridge.text);
  const view = new EditorView({
    parent,
    // The binding only carries changes; the editor starts from the text as it is now.
    doc: bridge.text.toString(),
    extensions: [
      // Undo is the shared document's (per user), not CodeMirror's own history.
      keymap.of(yUndoManagerKeymap),
      // Markdown with GitHub's extensions (tables, strikethrough, task lists); Enter
      // continues a list or a quote.
      markdown({ base: markdownLanguage }),
      keymap.of([...defaultKeymap, ...searchKeymap, indentWithTab]),
      highlightSpecialChars(),
      drawSelection(),
      dropCursor(),
      EditorState.allowMultipleSelections.of(true),
      indentOnInput(),
      highlightSelectionMatches(),
      placeholder("Start writing…"),
      EditorView.lineWrapping,
      livePreview(),
      yCollab(bridge.text, bridge.awareness, { undoManager }),
    ],
  });
  return {
    view,
    undoManager,
    destroy() {
      view.destroy();
      undoManager.destroy();
    },
  };
}
