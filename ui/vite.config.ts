import { defineConfig } from "vite";

// Tauri serves the built files from ui/dist; the dev server is only for `npm run dev`.
export default defineConfig({
  clearScreen: false,
  server: { port: 1420, strictPort: true, host: "127.0.0.1" },
  build: { target: "safari15", outDir: "dist", emptyOutDir: true, sourcemap: false },
  test: { environment: "jsdom" },
});
