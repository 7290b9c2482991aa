import { App } from "./app";
import { tauriTransport } from "./sync/tauri";
import { followSystemTheme } from "./views/theme";

followSystemTheme();

const root = document.getElementById("app");
if (root) {
  const app = new App(root, tauriTransport);
  app.start().catch((e: unknown) => {
    root.textContent = `Quire could not start: ${e instanceof Error ? e.message : String(e)}`;
  });
}
