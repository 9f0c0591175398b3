/* What one session's event stream adds up to: tasks with their phase, plan,
 * step progress, costs, files and output lines; a readable timeline; approvals.
 *
 * The store mutates in place and bumps `version` instead of copying: a task may
 * print 100,000 lines, and copying arrays per event would make that quadratic.
 * React reads it through useSyncExternalStore, and `apply` is batched by the
 * caller so that a burst of events costs one render.
 */
import type {
  CostUpdate,
  Decision,
  Event,
  EventType,
  FileCreated,
  Output,
  PlanStep,
  TaskPhase,
  TypedEvent,
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
  /** the task this one waits for while queued (a session runs one task at a time) */
  behind: string | null;
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
  /** the run the task is on (1 first; one more per retry) and the most retries it allows */
  attempt: number;
  retries: number;
  /** while queued for a retry: when its next attempt is due */
  retryAt: string | null;
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

/** Whether the reading view shows each event type (output goes to the task's
 * output panel). A record over every type: the protocol gaining one fails the
 * type check until it is placed here. */
const IN_TIMELINE: Record<EventType, boolean> = {
  "task.queued": true,
  "task.started": true,
  "task.succeeded": true,
  "task.failed": true,
  "task.cancelled": true,
  "task.timed_out": true,
  "task.retrying": true,
  "plan.proposed": true,
  "step.started": true,
  "step.progress": false,
  "step.completed": true,
  "step.failed": true,
  "agent.message": true,
  "agent.tool_call": true,
  code: true,
  output: false,
  "approval.requested": true,
  "approval.resolved": false,
  "approval.expired": false,
  "approval.cancelled": false,
  "state.saved": false,
  "cost.update": false,
  "file.created": true,
  error: true,
};

const FINAL_PHASE = {
  "task.succeeded": "succeeded",
  "task.failed": "failed",
  "task.cancelled": "cancelled",
  "task.timed_out": "timed_out",
} as const satisfies Partial<Record<EventType, TaskPhase>>;

type StepEvent = Extract<TypedEvent, { type: "step.started" | "step.progress" | "step.completed" | "step.failed" }>;
type FinalEvent = Extract<TypedEvent, { type: keyof typeof FINAL_PHASE }>;

/** The event with its payload typed by its `type`; null for a type this UI
 * does not know (a newer gateway). The gateway validated the payload of every
 * known type before storing it. */
function typed(event: Event): TypedEvent | null {
  return Object.hasOwn(IN_TIMELINE, event.type) ? (event as TypedEvent) : null;
}

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
    behind: null,
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
    attempt: 1,
    retries: 0,
    retryAt: null,
    startedAt: null,
    finishedAt: null,
  };
}

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
    const known = typed(event);
    if (known === null) return;
    if (IN_TIMELINE[known.type]) this.timeline.push(event);
    this.applyApproval(known);
    if (known.task_id) this.applyTaskEvent(this.task(known.task_id), known);
  }

  private applyTaskEvent(task: TaskState, event: TypedEvent): void {
    switch (event.type) {
      case "task.queued":
        task.engine = event.data.engine;
        task.mode = event.data.mode;
        task.prompt = event.data.prompt ?? "";
        task.behind = event.data.behind ?? null;
        task.maxCostUsd = event.data.max_cost_usd ?? null;
        task.maxTokens = event.data.max_tokens ?? null;
        return;
      case "task.started":
        if (!isFinal(task.phase)) task.phase = "running";
        task.engine = event.data.engine || task.engine;
        task.mode = event.data.mode || task.mode;
        task.startedAt = event.ts;
        task.attempt = event.data.attempt ?? task.attempt;
        task.retryAt = null;
        return;
      case "task.retrying":
        // The runner died; the task waits out its backoff, queued, then runs again.
        task.phase = "queued";
        task.attempt = event.data.attempt;
        task.retries = event.data.retries;
        task.retryAt = event.data.retry_at;
        task.reason = event.data.reason;
        return;
      case "task.succeeded":
      case "task.failed":
      case "task.cancelled":
      case "task.timed_out":
        return finish(task, event);
      case "plan.proposed":
        task.plan = event.data.steps;
        task.total = task.plan.length;
        task.stepStatus = task.plan.map(() => "pending");
        return;
      case "step.started":
      case "step.progress":
      case "step.completed":
      case "step.failed":
        return applyStep(task, event);
      case "output":
        return appendOutput(task, event.seq, event.data);
      case "cost.update":
        return addCost(task, event.data);
      case "file.created":
        task.files.push(event.data);
        return;
      case "approval.requested":
        if (!isFinal(task.phase)) task.phase = "waiting_approval";
        return;
      case "approval.resolved":
      case "approval.expired":
      case "approval.cancelled":
        if (task.phase === "waiting_approval") task.phase = "running";
        return;
      case "agent.message":
      case "agent.tool_call":
      case "code":
      case "state.saved":
      case "error":
        return; // shown by the timeline, nothing to add up
      default:
        return unhandled(event);
    }
  }

  private applyApproval(event: TypedEvent): void {
    if (event.type === "approval.requested") {
      const req = event.data;
      this.approvals.set(req.approval_id, {
        id: req.approval_id,
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
    if (event.type === "approval.resolved") {
      const approval = this.approvals.get(event.data.approval_id);
      if (!approval) return;
      approval.status = event.data.status;
      approval.decision = event.data.decision;
      approval.text = event.data.text ?? null;
      approval.resolvedBy = event.data.resolved_by;
    } else if (event.type === "approval.expired" || event.type === "approval.cancelled") {
      const approval = this.approvals.get(event.data.approval_id);
      if (approval) approval.status = event.type === "approval.expired" ? "expired" : "cancelled";
    }
  }
}

/** Compile-time proof that a switch covered every event type. */
function unhandled(event: never): void {
  void event;
}

function finish(task: TaskState, event: FinalEvent): void {
  const final = FINAL_PHASE[event.type];
  task.phase = final;
  task.reason = event.data.reason ?? "";
  task.finishedAt = event.ts;
  for (let i = 0; i < task.stepStatus.length; i++) {
    if (task.stepStatus[i] === "running") task.stepStatus[i] = final === "succeeded" ? "done" : "failed";
  }
}

function applyStep(task: TaskState, event: StepEvent): void {
  const { step, total } = event.data;
  task.total = Math.max(task.total, total);
  while (task.stepStatus.length < task.total) task.stepStatus.push("pending");
  task.step = step;
  if (event.type === "step.started") {
    task.stepStatus[step - 1] = "running";
    task.stepTitle = event.data.title || task.plan[step - 1]?.title || "";
    task.fraction = 0;
  } else if (event.type === "step.progress") {
    task.fraction = event.data.fraction;
  } else if (event.type === "step.completed") {
    task.stepStatus[step - 1] = "done";
    task.fraction = 1;
  } else {
    task.stepStatus[step - 1] = "failed";
  }
}

function appendOutput(task: TaskState, seq: number, data: Output): void {
  // One event may carry several lines; a trailing newline ends the last one.
  const lines = data.text.endsWith("\n") ? data.text.slice(0, -1).split("\n") : data.text.split("\n");
  for (const line of lines) task.output.push({ seq, stream: data.stream, text: line });
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
