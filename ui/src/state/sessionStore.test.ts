import { describe, expect, it } from "vitest";
import type { Event } from "../api/protocol";
import { progressOf, SessionStore, spendText } from "./sessionStore";

let seq = 0;
function ev(type: string, data: Record<string, unknown> = {}, task = "t1"): Event {
  seq += 1;
  return {
    v: 1,
    seq,
    session_id: "s1",
    task_id: task,
    type,
    ts: `2026-01-01T00:00:${String(seq % 60).padStart(2, "0")}Z`,
    data,
  };
}

function demoRun(): Event[] {
  seq = 0;
  return [
    ev("task.queued", { engine: "demo", mode: "one-shot", prompt: "go" }),
    ev("task.started", { engine: "demo", mode: "one-shot" }),
    ev("plan.proposed", { steps: [{ title: "load" }, { title: "fit" }] }),
    ev("approval.requested", { approval_id: "a1", prompt: "Run this plan?", options: ["approve", "reject"] }),
  ];
}

describe("SessionStore", () => {
  it("tracks phase, plan, approvals and steps of a task", () => {
    const store = new SessionStore();
    store.apply(demoRun());
    const task = store.tasks.get("t1")!;
    expect(task.phase).toBe("waiting_approval");
    expect(task.plan.map((s) => s.title)).toEqual(["load", "fit"]);
    expect(store.pendingApprovals().map((a) => a.id)).toEqual(["a1"]);

    store.apply([
      ev("approval.resolved", { approval_id: "a1", status: "approved", decision: "approve", resolved_by: "alice" }),
      ev("step.started", { step: 1, total: 2, title: "load" }),
      ev("step.progress", { step: 1, total: 2, fraction: 0.5 }),
    ]);
    expect(task.phase).toBe("running");
    expect(store.approvals.get("a1")!.resolvedBy).toBe("alice");
    expect(store.pendingApprovals()).toEqual([]);
    expect(progressOf(task)).toEqual({ done: 0, total: 2, percent: 25 });

    store.apply([ev("step.completed", { step: 1, total: 2 }), ev("step.started", { step: 2, total: 2 })]);
    expect(task.step).toBe(2);
    expect(task.stepStatus).toEqual(["done", "running"]);
    store.apply([ev("task.succeeded", { reason: "" })]);
    expect(task.phase).toBe("succeeded");
    expect(task.stepStatus).toEqual(["done", "done"]);
    expect(progressOf(task).percent).toBe(100);
  });

  it("splits output into lines and ignores events it has seen", () => {
    const store = new SessionStore();
    const events = [
      ...demoRun(),
      ev("output", { stream: "stdout", text: "a\nb\n" }),
      ev("output", { stream: "stderr", text: "c" }),
    ];
    store.apply(events);
    store.apply(events); // a replay after reconnect
    const lines = store.tasks.get("t1")!.output;
    expect(lines.map((l) => l.text)).toEqual(["a", "b", "c"]);
    expect(lines[2].stream).toBe("stderr");
    expect(store.lastSeq).toBe(6);
  });

  it("adds up costs and lists files", () => {
    const store = new SessionStore();
    seq = 0;
    store.apply([
      ev("cost.update", { prompt_tokens: 10, completion_tokens: 5, cost_usd: 0.01 }),
      ev("cost.update", { prompt_tokens: 1, completion_tokens: 2, cost_usd: 0.02 }),
      ev("file.created", { path: "plot.png", size: 10, mime: "image/png" }),
    ]);
    const task = store.tasks.get("t1")!;
    expect([task.promptTokens, task.completionTokens]).toEqual([11, 7]);
    expect(task.costUsd).toBeCloseTo(0.03);
    expect(task.files.map((f) => f.path)).toEqual(["plot.png"]);
  });

  it("notifies subscribers once per batch and marks final phases", () => {
    const store = new SessionStore();
    let calls = 0;
    store.subscribe(() => (calls += 1));
    store.apply(demoRun());
    store.apply([
      ev("approval.expired", { approval_id: "a1", on_timeout: "reject" }),
      ev("task.cancelled", { reason: "user" }),
    ]);
    expect(calls).toBe(2);
    expect(store.approvals.get("a1")!.status).toBe("expired");
    expect(store.tasks.get("t1")!.phase).toBe("cancelled");
    expect(store.tasks.get("t1")!.reason).toBe("user");
  });

  it("keeps a readable timeline without output lines", () => {
    const store = new SessionStore();
    store.apply([
      ...demoRun(),
      ev("output", { stream: "stdout", text: "x" }),
      ev("agent.message", { agent: "planner", content: "hi" }),
    ]);
    expect(store.timeline.map((e) => e.type)).toEqual([
      "task.queued",
      "task.started",
      "plan.proposed",
      "approval.requested",
      "agent.message",
    ]);
  });

  it("knows which task a queued task waits for, until it starts", () => {
    const store = new SessionStore();
    seq = 0;
    store.apply([
      ev("task.queued", { engine: "demo", mode: "one-shot" }, "t1"),
      ev("task.queued", { engine: "demo", mode: "one-shot", behind: "t1" }, "t2"),
    ]);
    expect(store.tasks.get("t2")!.behind).toBe("t1");
    expect(store.tasks.get("t2")!.phase).toBe("queued");
    expect(store.tasks.get("t1")!.behind).toBeNull();
    store.apply([ev("task.started", { engine: "demo", mode: "one-shot" }, "t2")]);
    expect(store.tasks.get("t2")!.phase).toBe("running");
  });

  it("shows a retried task queued for its next attempt, then running it", () => {
    const store = new SessionStore();
    seq = 0;
    store.apply([
      ev("task.queued", { engine: "demo", mode: "one-shot" }, "t1"),
      ev("task.started", { engine: "demo", mode: "one-shot", attempt: 1 }, "t1"),
      ev(
        "task.retrying",
        { attempt: 2, retries: 2, reason: "runner killed", delay_s: 5, retry_at: "2026-12-02T12:00:05Z" },
        "t1",
      ),
    ]);
    const task = store.tasks.get("t1")!;
    expect([task.phase, task.attempt, task.retries, task.retryAt]).toEqual(["queued", 2, 2, "2026-12-02T12:00:05Z"]);
    expect(store.timeline.map((e) => e.type)).toContain("task.retrying");
    store.apply([ev("task.started", { engine: "demo", mode: "one-shot", attempt: 2 }, "t1")]);
    expect([task.phase, task.attempt, task.retryAt]).toEqual(["running", 2, null]);
  });
});

describe("spend against budget", () => {
  it("shows the runner's totals against the task's limits", () => {
    seq = 0;
    const store = new SessionStore();
    store.apply([
      ev("task.queued", { engine: "demo", mode: "one-shot", prompt: "go", max_cost_usd: 0.5 }),
      ev("cost.update", {
        prompt_tokens: 100,
        completion_tokens: 40,
        cost_usd: 0.2,
        total_cost_usd: 0.2,
        max_cost_usd: 0.5,
      }),
      ev("cost.update", {
        prompt_tokens: 200,
        completion_tokens: 80,
        cost_usd: 0.4,
        total_cost_usd: 0.6,
        max_cost_usd: 0.5,
      }),
      ev("task.failed", { reason: "budget exceeded: $0.60 of $0.50" }),
    ]);
    const task = store.tasks.get("t1")!;
    expect(task.costUsd).toBeCloseTo(0.6);
    expect(spendText(task)).toBe("Tokens: 300 in · 120 out · Cost: $0.6000 of $0.50 budget");
    expect(task.reason).toBe("budget exceeded: $0.60 of $0.50");
  });

  it("counts tokens against a token budget and sums costs without totals", () => {
    seq = 0;
    const store = new SessionStore();
    store.apply([
      ev("task.queued", { engine: "demo", mode: "one-shot", max_tokens: 1000 }),
      ev("cost.update", { prompt_tokens: 600, completion_tokens: 100, cost_usd: 0.01 }),
      ev("cost.update", { prompt_tokens: 50, completion_tokens: 50, cost_usd: 0.02 }),
    ]);
    const task = store.tasks.get("t1")!;
    expect(spendText(task)).toBe("Tokens: 650 in · 150 out (800 of 1,000) · Cost: $0.0300");
  });
});
