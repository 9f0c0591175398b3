import { act, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { cleanup } from "@testing-library/react";
import type { ApprovalView } from "../api/protocol";
import type { ApprovalState, OutputLine } from "../state/sessionStore";
import { connection } from "../state/shared";
import { ApprovalCard, countdown } from "./ApprovalCard";
import { mergePending } from "./ApprovalsDock";
import { ConnectionBadge } from "./ConnectionBadge";
import { OutputPanel } from "./OutputPanel";

afterEach(cleanup);

function lines(n: number): OutputLine[] {
  return Array.from({ length: n }, (_, i) => ({ seq: i + 1, stream: "stdout" as const, text: `line ${i + 1}` }));
}

describe("OutputPanel", () => {
  it("keeps only a window of 100,000 lines in the DOM", () => {
    const { container } = render(<OutputPanel taskId="t1" lines={lines(100_000)} version={1} />);
    expect(screen.getByTestId("output-count").textContent).toBe("100,000 lines");
    const rows = container.querySelectorAll(".output-body .row");
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.length).toBeLessThan(60);
    // the scroll space still stands for every line
    const space = container.querySelector<HTMLElement>(".output-space")!;
    expect(space.style.height).toBe(`${100_000 * 18}px`);
  });

  it("collapses and expands with the keyboard-reachable toggle", () => {
    const { container } = render(<OutputPanel taskId="t1" lines={lines(3)} version={1} />);
    const toggle = screen.getByRole("button", { name: /Output/ });
    expect(toggle.getAttribute("aria-expanded")).toBe("true");
    fireEvent.click(toggle);
    expect(toggle.getAttribute("aria-expanded")).toBe("false");
    expect(container.querySelector(".output-body")).toBeNull();
  });

  it("marks stderr lines", () => {
    const mixed: OutputLine[] = [
      { seq: 1, stream: "stdout", text: "ok" },
      { seq: 2, stream: "stderr", text: "bad" },
    ];
    const { container } = render(<OutputPanel taskId="t1" lines={mixed} version={1} />);
    expect(container.querySelector(".row.stderr")?.textContent).toBe("bad");
  });
});

function approval(patch: Partial<ApprovalState> = {}): ApprovalState {
  return {
    id: "a1",
    taskId: "t1",
    kind: "plan",
    prompt: "Approve this plan?",
    options: ["approve", "reject"],
    allowText: false,
    context: { steps: [{ title: "load" }, { title: "fit" }] },
    expiresAt: null,
    status: "pending",
    decision: null,
    text: null,
    resolvedBy: null,
    seq: 1,
    ...patch,
  };
}

describe("ApprovalCard", () => {
  it("offers the options and shows the plan under review", () => {
    render(<ApprovalCard approval={approval()} />);
    expect(screen.getByRole("button", { name: "Approve" })).toBeTruthy();
    expect(screen.getByRole("button", { name: "Reject" })).toBeTruthy();
    expect(screen.getAllByRole("listitem").map((li) => li.textContent)).toEqual(["load", "fit"]);
  });

  it("needs text before a free-text answer can be sent", () => {
    render(<ApprovalCard approval={approval({ options: ["answer"], allowText: true })} />);
    const send = screen.getByRole("button", { name: "Send answer" }) as HTMLButtonElement;
    expect(send.disabled).toBe(true);
    fireEvent.change(screen.getByLabelText("Your answer"), { target: { value: "use Planck 2018" } });
    expect(send.disabled).toBe(false);
  });

  it("says who resolved it, and offers no buttons then", () => {
    render(<ApprovalCard approval={approval({ status: "approved", decision: "approve", resolvedBy: "alice" })} />);
    expect(screen.getByRole("status").textContent).toBe("Approved by alice");
    expect(screen.queryByRole("button")).toBeNull();
  });
});

describe("countdown", () => {
  it("formats the time left and stops at zero", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(countdown("2026-01-01T00:01:05Z", now)).toBe("1:05");
    expect(countdown("2026-01-01T02:00:09Z", now)).toBe("2:00:09");
    expect(countdown("2025-12-31T00:00:00Z", now)).toBe("0:00");
    expect(countdown(null, now)).toBeNull();
  });
});

describe("mergePending", () => {
  const view = (id: string): ApprovalView => ({
    id,
    session_id: "s1",
    task_id: "t1",
    kind: "plan",
    prompt: "?",
    options: ["approve", "reject"],
    allow_text: false,
    context: {},
    status: "pending",
    on_timeout: "reject",
    created_at: "2026-01-01T00:00:00Z",
  });

  it("drops polled approvals the live stream has seen resolved, adds live ones not yet polled", () => {
    const merged = mergePending(
      [view("a1"), view("a2")],
      [approval({ id: "a1", status: "approved" }), approval({ id: "a3" })],
    );
    expect(merged.map((m) => m.approval.id)).toEqual(["a2", "a3"]);
    expect(merged[0].sessionId).toBe("s1");
  });
});

describe("ConnectionBadge", () => {
  it("shows reconnecting with the attempt and backoff", () => {
    render(<ConnectionBadge />);
    act(() => connection.set({ state: "reconnecting", info: { attempt: 2, retryInMs: 1500 } }));
    const badge = screen.getByRole("status");
    expect(badge.textContent).toBe("Reconnecting (attempt 2, retry in 1.5 s)");
    act(() => connection.set({ state: "replaying", info: { attempt: 0 } }));
    expect(badge.textContent).toBe("Replaying missed events…");
    expect(badge.getAttribute("data-state")).toBe("replaying");
  });
});
