/// <reference types="vitest/config" />
// Build config for the UI the gateway serves at `/`. In development, `npm run dev`
// proxies the API and both WebSockets to a gateway at CMBTASK_URL.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

const gateway = process.env.CMBTASK_URL ?? "http://127.0.0.1:8123";

export default defineConfig({
  plugins: [react()],
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true },
  server: {
    proxy: {
      "/api": gateway,
      "/ws": { target: gateway.replace(/^http/, "ws"), ws: true },
    },
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.ts", "src/**/*.test.tsx"],
  },
});
