import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { api, ApiError, onUnauthorized, setToken, wsUrl } from "./http";

function reply(status: number, body: unknown): Response {
  return new Response(body === undefined ? null : JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

let fetchMock: ReturnType<typeof vi.fn>;

beforeEach(() => {
  fetchMock = vi.fn();
  vi.stubGlobal("fetch", fetchMock);
  setToken(null);
});
afterEach(() => {
  vi.unstubAllGlobals();
  setToken(null);
});

describe("api", () => {
  it("sends the bearer token and query filters", async () => {
    setToken("cmbt_abc");
    fetchMock.mockResolvedValue(reply(200, { items: [], total: 0, limit: 20, offset: 0 }));
    await api.listSessions({ limit: 20, offset: 40, mode: "one-shot", status: "", q: "fit" });
    const [url, init] = fetchMock.mock.calls[0] as [URL, RequestInit];
    expect(url.pathname).toBe("/api/sessions");
    expect(Object.fromEntries(url.searchParams)).toEqual({ limit: "20", offset: "40", mode: "one-shot", q: "fit" });
    expect((init.headers as Record<string, string>).Authorization).toBe("Bearer cmbt_abc");
  });

  it("turns an ErrorBody into an ApiError", async () => {
    fetchMock.mockResolvedValue(
      reply(409, { code: "already_resolved", message: "approval already approved by alice" }),
    );
    const error = await api.resolveApproval("a1", "approve", null).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({
      status: 409,
      code: "already_resolved",
      message: "approval already approved by alice",
    });
    const [, init] = fetchMock.mock.calls[0] as [URL, RequestInit];
    expect(JSON.parse(String(init.body))).toEqual({ decision: "approve", text: null });
  });

  it("tells the app to sign in on 401", async () => {
    const handler = vi.fn();
    onUnauthorized(handler);
    fetchMock.mockResolvedValue(reply(401, { code: "unauthorized", message: "token required" }));
    await expect(api.me()).rejects.toMatchObject({ status: 401 });
    expect(handler).toHaveBeenCalledOnce();
  });

  it("accepts 204 with no body", async () => {
    fetchMock.mockResolvedValue(new Response(null, { status: 204 }));
    await expect(api.deleteSession("s1")).resolves.toBeUndefined();
  });
});

describe("wsUrl", () => {
  it("switches to ws and carries the token as a query parameter", () => {
    setToken("cmbt_xyz");
    const url = new URL(wsUrl("/ws/sessions/s1", { after: 42 }));
    expect(url.protocol).toBe("ws:");
    expect(url.pathname).toBe("/ws/sessions/s1");
    expect(url.searchParams.get("after")).toBe("42");
    expect(url.searchParams.get("token")).toBe("cmbt_xyz");
  });
});
