/* What one session's event stream adds up to: tasks with their phase, plan,
 * step progress, costs, files and output lines; a readable timeline; approvals.
 *
 * The store mutates in place and bumps `version` instead of copying: a task may
 * print 100,000 lines, and copying arrays per event would make that quadratic.
 * React reads it through useSyncExternalStore, and `apply` is batched by the
 * caller so that a burst of events costs one render.
 */
import type {
  ApprovalRequested,
  ApprovalResolved,
  CostUpdate,
  Decision,
  Event,
  FileCreated,
  PlanStep,
  TaskPhase,
} from "../api/protocol";

export interface OutputLine {
  seq: number;
  stream: "stdout" | "stderr" | "log";
  text: string;
}

export type StepStatus = "pending" | "running" | "done" | "failed";

export interface TaskState {
  id: string;
  phase: TaskPhase;
  engine: string;
  mode: string;
  prompt: string;
  plan: PlanStep[];
  stepStatus: StepStatus[];
  step: number;
  total: number;
  stepTitle: string;
  fraction: number;
  promptTokens: number;
  completionTokens: number;
  costUsd: number;
  /** the task's budget, from its queued event or its cost updates (null: none) */
  maxCostUsd: number | null;
  maxTokens: number | null;
  files: FileCreated[];
  output: OutputLine[];
  reason: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface ApprovalState {
  id: string;
  taskId: string;
  kind: string;
  prompt: string;
  options: Decision[];
  allowText: boolean;
  context: Record<string, unknown>;
  expiresAt: string | null;
  status: string;
  decision: Decision | null;
  text: string | null;
  resolvedBy: string | null;
  seq: number;
}

/** Events shown in the reading view; output goes to the task's output panel. */
const TIMELINE_TYPES = new Set([
  "plan.proposed",
  "step.started",
  "step.completed",
  "step.failed",
  "agent.message",
  "agent.tool_call",
  "code",
  "approval.requested",
  "error",
  "task.queued",
  "task.started",
  "task.succeeded",
  "task.failed",
  "task.cancelled",
  "task.timed_out",
  "file.created",
]);

const FINAL_PHASES: Record<string, TaskPhase> = {
  "task.succeeded": "succeeded",
  "task.failed": "failed",
  "task.cancelled": "cancelled",
  "task.timed_out": "timed_out",
};

export function isFinal(phase: TaskPhase): boolean {
  return phase === "succeeded" || phase === "failed" || phase === "cancelled" || phase === "timed_out";
}

function newTask(id: string): TaskState {
  return {
    id,
    phase: "queued",
    engine: "",
    mode: "",
    prompt: "",
    plan: [],
    stepStatus: [],
    step: 0,
    total: 0,
    stepTitle: "",
    fraction: 0,
    promptTokens: 0,
    completionTokens: 0,
    costUsd: 0,
    maxCostUsd: null,
    maxTokens: null,
    files: [],
    output: [],
    reason: "",
    startedAt: null,
    finishedAt: null,
  };
}

type Data = Record<string, unknown>;

export class SessionStore {
  version = 0;
  lastSeq = 0;
  tasks = new Map<string, TaskState>();
  /** task ids, oldest first */
  taskOrder: string[] = [];
  timeline: Event[] = [];
  approvals = new Map<string, ApprovalState>();
  private listeners = new Set<() => void>();

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getVersion = (): number => this.version;

  /** Apply events in seq order; ones already seen are ignored. */
  apply(events: Event[]): void {
    let changed = false;
    for (const event of events) {
      if (event.seq <= this.lastSeq) continue;
      this.lastSeq = event.seq;
      this.applyOne(event);
      changed = true;
    }
    if (changed) {
      this.version += 1;
      for (const listener of this.listeners) listener();
    }
  }

  pendingApprovals(): ApprovalState[] {
    return [...this.approvals.values()].filter((a) => a.status === "pending");
  }

  private task(id: string): TaskState {
    let task = this.tasks.get(id);
    if (!task) {
      task = newTask(id);
      this.tasks.set(id, task);
      this.taskOrder.push(id);
    }
    return task;
  }

  private applyOne(event: Event): void {
    const data = (event.data ?? {}) as Data;
    if (TIMELINE_TYPES.has(event.type)) this.timeline.push(event);
    if (event.type.startsWith("approval.")) this.applyApproval(event, data);
    if (!event.task_id) return;
    const task = this.task(event.task_id);
    const final = FINAL_PHASES[event.type];
    if (final) {
      task.phase = final;
      task.reason = String(data.reason ?? "");
      task.finishedAt = event.ts;
      for (let i = 0; i < task.stepStatus.length; i++) {
        if (task.stepStatus[i] === "running") task.stepStatus[i] = final === "succeeded" ? "done" : "failed";
      }
      return;
    }
    this.applyTaskEvent(task, event, data);
  }

  private applyTaskEvent(task: TaskState, event: Event, data: Data): void {
    switch (event.type) {
      case "task.queued":
        task.engine = String(data.engine ?? "");
        task.mode = String(data.mode ?? "");
        task.prompt = String(data.prompt ?? "");
        task.maxCostUsd = typeof data.max_cost_usd === "number" ? data.max_cost_usd : null;
        task.maxTokens = typeof data.max_tokens === "number" ? data.max_tokens : null;
        return;
      case "task.started":
        if (!isFinal(task.phase)) task.phase = "running";
        task.engine = String(data.engine ?? task.engine);
        task.mode = String(data.mode ?? task.mode);
        task.startedAt = event.ts;
        return;
      case "plan.proposed":
        task.plan = (data.steps as PlanStep[] | undefined) ?? [];
        task.total = task.plan.length;
        task.stepStatus = task.plan.map(() => "pending");
        return;
      case "step.started":
      case "step.progress":
      case "step.completed":
      case "step.failed":
        return applyStep(task, event.type, data);
      case "output":
        return appendOutput(task, event.seq, data);
      case "cost.update":
        return addCost(task, data as unknown as CostUpdate);
      case "file.created":
        task.files.push(data as unknown as FileCreated);
        return;
      case "approval.requested":
        if (!isFinal(task.phase)) task.phase = "waiting_approval";
        return;
      case "approval.resolved":
      case "approval.expired":
      case "approval.cancelled":
        if (task.phase === "waiting_approval") task.phase = "running";
        return;
    }
  }

  private applyApproval(event: Event, data: Data): void {
    const id = String(data.approval_id ?? "");
    if (event.type === "approval.requested") {
      const req = data as unknown as ApprovalRequested;
      this.approvals.set(id, {
        id,
        taskId: event.task_id ?? "",
        kind: req.kind ?? "approval",
        prompt: req.prompt,
        options: req.options ?? ["approve", "reject"],
        allowText: req.allow_text ?? false,
        context: req.context ?? {},
        expiresAt: req.expires_at ?? null,
        status: "pending",
        decision: null,
        text: null,
        resolvedBy: null,
        seq: event.seq,
      });
      return;
    }
    const approval = this.approvals.get(id);
    if (!approval) return;
    if (event.type === "approval.resolved") {
      const res = data as unknown as ApprovalResolved;
      approval.status = res.status;
      approval.decision = res.decision;
      approval.text = res.text ?? null;
      approval.resolvedBy = res.resolved_by;
    } else if (event.type === "approval.expired") {
      approval.status = "expired";
    } else if (event.type === "approval.cancelled") {
      approval.status = "cancelled";
    }
  }
}

function applyStep(task: TaskState, type: string, data: Data): void {
  const step = Number(data.step ?? 0);
  const total = Number(data.total ?? task.total);
  task.total = Math.max(task.total, total);
  while (task.stepStatus.length < task.total) task.stepStatus.push("pending");
  task.step = step;
  if (type === "step.started") {
    task.stepStatus[step - 1] = "running";
    task.stepTitle = String(data.title ?? task.plan[step - 1]?.title ?? "");
    task.fraction = 0;
  } else if (type === "step.progress") {
    task.fraction = Number(data.fraction ?? 0);
  } else if (type === "step.completed") {
    task.stepStatus[step - 1] = "done";
    task.fraction = 1;
  } else {
    task.stepStatus[step - 1] = "failed";
  }
}

function appendOutput(task: TaskState, seq: number, data: Data): void {
  const stream = (data.stream as OutputLine["stream"]) ?? "stdout";
  const text = String(data.text ?? "");
  // One event may carry several lines; a trailing newline ends the last one.
  const lines = text.endsWith("\n") ? text.slice(0, -1).split("\n") : text.split("\n");
  for (const line of lines) task.output.push({ seq, stream, text: line });
}

function addCost(task: TaskState, cost: CostUpdate): void {
  task.promptTokens += cost.prompt_tokens ?? 0;
  task.completionTokens += cost.completion_tokens ?? 0;
  // the runner's running total is the one its budget compares; summing is the fallback
  task.costUsd = cost.total_cost_usd ?? task.costUsd + (cost.cost_usd ?? 0);
  task.maxCostUsd = cost.max_cost_usd ?? task.maxCostUsd;
  task.maxTokens = cost.max_tokens ?? task.maxTokens;
}

/** "Cost: $0.1200 of $0.50 · 3,400 of 10,000 tokens": spend against the task's budget. */
export function spendText(task: TaskState): string {
  const tokens = task.promptTokens + task.completionTokens;
  const n = (value: number) => value.toLocaleString("en-US");
  let text = `Tokens: ${n(task.promptTokens)} in · ${n(task.completionTokens)} out`;
  if (task.maxTokens !== null) text += ` (${n(tokens)} of ${n(task.maxTokens)})`;
  text += ` · Cost: $${task.costUsd.toFixed(4)}`;
  if (task.maxCostUsd !== null) text += ` of $${task.maxCostUsd.toFixed(2)} budget`;
  return text;
}

/** Progress of a task in whole steps done plus the running step's fraction. */
export function progressOf(task: TaskState): { done: number; total: number; percent: number } {
  const done = task.stepStatus.filter((s) => s === "done").length;
  const total = task.total;
  if (total === 0) return { done: 0, total: 0, percent: task.phase === "succeeded" ? 100 : 0 };
  const running = task.stepStatus.some((s) => s === "running") ? task.fraction : 0;
  return { done, total, percent: Math.min(100, Math.round(((done + running) / total) * 100)) };
}
