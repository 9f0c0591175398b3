import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../api/http";
import { SettingsPage } from "./SettingsPage";

const KEY = "sk-typed-into-the-page-123456";

function reply(status: number, body?: unknown): Response {
  return new Response(body === undefined ? null : JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

let stored: string[];
let fetchMock: ReturnType<typeof vi.fn>;

beforeEach(() => {
  stored = [];
  setToken(null);
  fetchMock = vi.fn((url: URL, init: RequestInit) => {
    const method = init.method ?? "GET";
    if (url.pathname === "/api/keys" && method === "GET") {
      const items = stored.map((p) => ({
        provider: p,
        env_var: `${p.toUpperCase()}_API_KEY`,
        updated_at: "2026-12-02T05:00:00Z",
      }));
      return Promise.resolve(
        reply(200, {
          items,
          providers: { openai: "OPENAI_API_KEY", anthropic: "ANTHROPIC_API_KEY" },
          gateway_fallback: false,
        }),
      );
    }
    if (url.pathname.startsWith("/api/keys/") && method === "PUT") {
      stored.push(url.pathname.split("/").pop() ?? "");
      return Promise.resolve(
        reply(200, { provider: "anthropic", env_var: "ANTHROPIC_API_KEY", updated_at: "2026-12-02T05:00:00Z" }),
      );
    }
    if (url.pathname.startsWith("/api/keys/") && method === "DELETE") {
      stored = [];
      return Promise.resolve(reply(204));
    }
    if (url.pathname === "/api/settings" && method === "GET") {
      return Promise.resolve(reply(200, { max_cost_usd: 0.5, max_tokens: null, prices: {} }));
    }
    if (url.pathname === "/api/settings" && method === "PUT") {
      return Promise.resolve(reply(200, JSON.parse(String(init.body))));
    }
    return Promise.resolve(reply(404, { code: "not_found", message: "no route" }));
  });
  vi.stubGlobal("fetch", fetchMock);
});
afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

describe("SettingsPage", () => {
  it("stores a key, clears the field, lists the provider only and deletes it", async () => {
    render(<SettingsPage />);
    await screen.findByTestId("no-keys");
    fireEvent.change(screen.getByLabelText("Provider"), { target: { value: "anthropic" } });
    const input = screen.getByLabelText("Key");
    expect(input).toHaveProperty("type", "password");
    fireEvent.change(input, { target: { value: KEY } });
    fireEvent.click(screen.getByRole("button", { name: "Save key" }));
    await screen.findByText("Stored your anthropic key.");
    const put = fetchMock.mock.calls.find(([, init]) => (init as RequestInit).method === "PUT");
    expect((put?.[0] as URL).pathname).toBe("/api/keys/anthropic");
    expect(JSON.parse(String((put?.[1] as RequestInit).body))).toEqual({ value: KEY });
    expect(input).toHaveProperty("value", "");
    await screen.findByRole("button", { name: "Delete anthropic key" });
    expect(document.body.textContent).not.toContain(KEY);

    fireEvent.click(screen.getByRole("button", { name: "Delete anthropic key" }));
    await screen.findByText("Deleted your anthropic key.");
    await screen.findByTestId("no-keys");
  });

  it("shows and saves the default budget", async () => {
    render(<SettingsPage />);
    const cost = await screen.findByLabelText("Max cost (USD)");
    await waitFor(() => expect(cost).toHaveProperty("value", "0.5"));
    fireEvent.change(screen.getByLabelText("Max tokens"), { target: { value: "5000" } });
    fireEvent.click(screen.getByRole("button", { name: "Save defaults" }));
    await screen.findByText("Saved. New tasks use these defaults.");
    const put = fetchMock.mock.calls.find(
      ([url, init]) => (url as URL).pathname === "/api/settings" && (init as RequestInit).method === "PUT",
    );
    expect(JSON.parse(String((put?.[1] as RequestInit).body))).toEqual({
      max_cost_usd: 0.5,
      max_tokens: 5000,
      prices: {},
    });
  });
});
