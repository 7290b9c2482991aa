// The editor: CodeMirror 6 with Markdown, bound to a Y.Text by y-codemirror.next. Undo and
// redo go through a Y.UndoManager that tracks only this user's edits; remote cursors come from
// the awareness.

import { EditorView, basicSetup } from "codemirror";
import { markdown } from "@codemirror/lang-markdown";
import { keymap } from "@codemirror/view";
import { yCollab, yUndoManagerKeymap } from "y-codemirror.next";
import * as Y from "yjs";

import type { DocBridge } from "../sync/bridge";

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
      keymap.of(yUndoManagerKeymap),
      basicSetup,
      markdown(),
      EditorView.lineWrapping,
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
