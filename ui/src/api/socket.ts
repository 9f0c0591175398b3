/* The session event stream: one resilient WebSocket to /ws/sessions/{id}.
 *
 * The gateway numbers a session's events with a gap-free `seq`. This client
 * remembers the last one it delivered, so that after any drop (network, gateway
 * restart, silent half-open socket) it reconnects with `?after=<lastSeq>` and
 * the view catches up with nothing missing and nothing twice:
 *  - events at or below `lastSeq` are dropped (dedupe by seq);
 *  - an event above `lastSeq + 1` means something was lost: resubscribe;
 *  - no frame for longer than the heartbeat allows means the socket is dead
 *    even if the browser has not noticed: drop it and reconnect;
 *  - reconnects back off exponentially with jitter, reset by a good hello.
 */
import type { Event, WsHello } from "./protocol";

export type ConnectionState =
  "idle" | "connecting" | "replaying" | "connected" | "reconnecting" | "unauthorized" | "not_found" | "closed";

/** The part of the browser's WebSocket this module uses (tests pass a fake). */
export interface SocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type SocketFactory = (url: string) => SocketLike;

export interface Backoff {
  initialMs: number;
  maxMs: number;
  factor: number;
  /** fraction of the delay that is randomised, 0..1 */
  jitter: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 15_000, factor: 2, jitter: 0.3 };

/** Close codes from protocol/cmbtask_protocol/client.py. */
export const CLOSE_AUTH = 4401;
export const CLOSE_NOT_FOUND = 4404;
/** Our own code when we drop a socket on purpose (heartbeat, gap). */
export const CLOSE_CLIENT_RESYNC = 4000;

/** Delay before reconnect attempt `attempt` (0-based). */
export function backoffDelay(attempt: number, backoff: Backoff, random: () => number = Math.random): number {
  const base = Math.min(backoff.maxMs, backoff.initialMs * backoff.factor ** attempt);
  const spread = base * backoff.jitter;
  return Math.max(0, Math.round(base - spread + 2 * spread * random()));
}

export interface StateInfo {
  attempt: number;
  /** set while reconnecting: when the next try starts */
  retryInMs?: number;
  /** set while replaying: the seq the backlog ends at */
  replayUntil?: number;
}

export interface SessionStreamOptions {
  /** URL for a connection that resumes after `after` */
  url: (after: number) => string;
  /** events up to this seq are already known */
  after?: number;
  onEvent: (event: Event) => void;
  onState?: (state: ConnectionState, info: StateInfo) => void;
  /** control frames (`ws.*`) other than hello/replayed/heartbeat */
  onControl?: (frame: Record<string, unknown>) => void;
  createSocket?: SocketFactory;
  backoff?: Partial<Backoff>;
  /** silence after which the socket counts as dead; default 2.5 × hello.heartbeat_s */
  heartbeatTimeoutMs?: number;
  random?: () => number;
}

const FALLBACK_HEARTBEAT_MS = 30_000;

export class SessionStream {
  lastSeq: number;
  state: ConnectionState = "idle";
  private socket: SocketLike | null = null;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatMs: number;
  private replayUntil = 0;
  private gapRetriedAt = -1;
  private readonly backoff: Backoff;
  private readonly createSocket: SocketFactory;

  constructor(private readonly options: SessionStreamOptions) {
    this.lastSeq = options.after ?? 0;
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.heartbeatMs = options.heartbeatTimeoutMs ?? FALLBACK_HEARTBEAT_MS;
    this.createSocket = options.createSocket ?? ((url) => new WebSocket(url) as unknown as SocketLike);
  }

  start(): void {
    if (this.state !== "idle" && this.state !== "closed") return;
    this.state = "idle";
    this.open();
  }

  /** Close for good; no more callbacks. */
  stop(): void {
    this.clearTimers();
    this.detach()?.close(1000, "client closed");
    this.setState("closed");
  }

  /** Skip the backoff wait (e.g. the browser just came back online). */
  reconnectNow(): void {
    if (this.state !== "reconnecting") return;
    this.clearTimers();
    this.open();
  }

  private open(): void {
    // A reconnect stays "reconnecting" until the gateway says hello.
    if (this.state !== "reconnecting") this.setState("connecting");
    const socket = this.createSocket(this.options.url(this.lastSeq));
    this.socket = socket;
    socket.onmessage = (ev) => this.onMessage(ev.data);
    socket.onclose = (ev) => this.onClose(ev.code);
    socket.onerror = () => undefined; // onclose follows and decides
    socket.onopen = () => this.armHeartbeat();
  }

  private onMessage(raw: unknown): void {
    this.armHeartbeat();
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(String(raw)) as Record<string, unknown>;
    } catch {
      return; // a frame we cannot read is not worth losing the stream over
    }
    if (typeof frame.seq === "number") {
      this.onStoredEvent(frame as unknown as Event);
      return;
    }
    this.onControlFrame(frame);
  }

  private onStoredEvent(event: Event): void {
    if (event.seq <= this.lastSeq) return;
    if (event.seq > this.lastSeq + 1 && this.gapRetriedAt !== this.lastSeq) {
      // Lost something in between: ask the gateway again from what we have.
      this.gapRetriedAt = this.lastSeq;
      this.resync("gap");
      return;
    }
    this.lastSeq = event.seq;
    this.options.onEvent(event);
    if (this.state === "replaying" && this.lastSeq >= this.replayUntil) this.setState("connected");
  }

  private onControlFrame(frame: Record<string, unknown>): void {
    switch (frame.type) {
      case "ws.hello":
        this.onHello(frame as unknown as WsHello);
        return;
      case "ws.replayed":
        this.setState("connected");
        return;
      case "ws.heartbeat":
        return;
      default:
        this.options.onControl?.(frame);
    }
  }

  private onHello(hello: WsHello): void {
    this.attempt = 0;
    if (this.options.heartbeatTimeoutMs === undefined && hello.heartbeat_s > 0) {
      this.heartbeatMs = hello.heartbeat_s * 2500;
      this.armHeartbeat();
    }
    this.replayUntil = hello.last_seq;
    this.setState(hello.last_seq > this.lastSeq ? "replaying" : "connected");
  }

  private onClose(code: number): void {
    this.detach();
    this.clearTimers();
    if (code === CLOSE_AUTH) return this.setState("unauthorized");
    if (code === CLOSE_NOT_FOUND) return this.setState("not_found");
    this.scheduleReconnect();
  }

  /** Drop the current socket on purpose and reconnect from `lastSeq`. */
  private resync(reason: string): void {
    this.detach()?.close(CLOSE_CLIENT_RESYNC, reason);
    this.clearTimers();
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    const delay = backoffDelay(this.attempt, this.backoff, this.options.random);
    this.attempt += 1;
    this.setState("reconnecting", delay);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.open();
    }, delay);
  }

  private armHeartbeat(): void {
    if (this.heartbeatTimer !== null) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => {
      this.heartbeatTimer = null;
      this.resync("heartbeat timeout");
    }, this.heartbeatMs);
  }

  private detach(): SocketLike | null {
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onerror = null;
      socket.onclose = null;
    }
    return socket;
  }

  private clearTimers(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    if (this.heartbeatTimer !== null) clearTimeout(this.heartbeatTimer);
    this.retryTimer = this.heartbeatTimer = null;
  }

  private setState(state: ConnectionState, retryInMs?: number): void {
    if (this.state === "closed" && state !== "closed") return;
    if (state === this.state && state !== "reconnecting") return;
    this.state = state;
    this.options.onState?.(state, {
      attempt: this.attempt,
      retryInMs,
      replayUntil: state === "replaying" ? this.replayUntil : undefined,
    });
  }
}
