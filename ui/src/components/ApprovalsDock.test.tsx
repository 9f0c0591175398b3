import { act, cleanup, render } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { api } from "../api/http";
import { ApprovalsDock } from "./ApprovalsDock";

function setHidden(hidden: boolean): void {
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  document.dispatchEvent(new Event("visibilitychange"));
}

describe("ApprovalsDock polling", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    setHidden(false);
  });
  afterEach(() => {
    cleanup();
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  it("asks every 3 s while visible, stops while hidden, asks at once when shown again", async () => {
    const ask = vi.spyOn(api, "pendingApprovals").mockResolvedValue({ items: [] } as never);
    render(<ApprovalsDock />);
    await act(async () => {
      await vi.advanceTimersByTimeAsync(0);
    });
    expect(ask).toHaveBeenCalledTimes(1);
    await act(async () => {
      await vi.advanceTimersByTimeAsync(6_100);
    });
    expect(ask).toHaveBeenCalledTimes(3);

    setHidden(true);
    await act(async () => {
      await vi.advanceTimersByTimeAsync(3_100); // the poll already scheduled runs, then no more
      await vi.advanceTimersByTimeAsync(30_000);
    });
    expect(ask).toHaveBeenCalledTimes(4);

    await act(async () => {
      setHidden(false);
      await vi.advanceTimersByTimeAsync(0);
    });
    expect(ask).toHaveBeenCalledTimes(5);
    await act(async () => {
      setHidden(true);
      setHidden(false); // shown again while nothing is scheduled or asked: one chain only
      await vi.advanceTimersByTimeAsync(3_100);
    });
    expect(ask).toHaveBeenCalledTimes(6);
  });
});
