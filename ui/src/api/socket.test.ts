import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Event } from "./protocol";
import {
  backoffDelay,
  CLOSE_AUTH,
  CLOSE_CLIENT_RESYNC,
  CLOSE_NOT_FOUND,
  DEFAULT_BACKOFF,
  SessionStream,
  type ConnectionState,
  type SocketLike,
} from "./socket";

class FakeSocket implements SocketLike {
  onopen: SocketLike["onopen"] = null;
  onmessage: SocketLike["onmessage"] = null;
  onclose: SocketLike["onclose"] = null;
  onerror: SocketLike["onerror"] = null;
  sent: string[] = [];
  closedWith: number | null = null;
  constructor(readonly url: string) {}
  send(data: string): void {
    this.sent.push(data);
  }
  close(code = 1000): void {
    this.closedWith = code;
  }
  // server side
  open(): void {
    this.onopen?.({});
  }
  frame(frame: object): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  hello(after: number, lastSeq: number, heartbeatS = 10): void {
    this.frame({ type: "ws.hello", session_id: "s1", after, last_seq: lastSeq, heartbeat_s: heartbeatS });
  }
  event(seq: number): void {
    this.frame(ev(seq));
  }
  drop(code = 1006): void {
    this.onclose?.({ code, reason: "" });
  }
}

function ev(seq: number): Event {
  return { v: 1, seq, session_id: "s1", task_id: "t1", type: "output", ts: "2026-01-01T00:00:00Z", data: {} };
}

function harness(after = 0, extra: Partial<ConstructorParameters<typeof SessionStream>[0]> = {}) {
  const sockets: FakeSocket[] = [];
  const events: number[] = [];
  const states: ConnectionState[] = [];
  const stream = new SessionStream({
    url: (n) => `ws://gw/ws/sessions/s1?after=${n}`,
    after,
    onEvent: (e) => events.push(e.seq),
    onState: (s) => states.push(s),
    createSocket: (url) => {
      const socket = new FakeSocket(url);
      sockets.push(socket);
      return socket;
    },
    random: () => 0.5, // no jitter: delays are exact
    ...extra,
  });
  const last = () => sockets[sockets.length - 1];
  return { stream, sockets, events, states, last };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("backoffDelay", () => {
  it("grows exponentially up to the cap", () => {
    const b = { ...DEFAULT_BACKOFF, jitter: 0 };
    expect([0, 1, 2, 3].map((n) => backoffDelay(n, b))).toEqual([500, 1000, 2000, 4000]);
    expect(backoffDelay(20, b)).toBe(b.maxMs);
  });

  it("spreads by the jitter fraction", () => {
    const b = { initialMs: 1000, maxMs: 10_000, factor: 2, jitter: 0.5 };
    expect(backoffDelay(0, b, () => 0)).toBe(500);
    expect(backoffDelay(0, b, () => 1)).toBe(1500);
  });
});

describe("SessionStream", () => {
  it("connects after the given seq, replays, then goes live", () => {
    const h = harness(0);
    h.stream.start();
    expect(h.last().url).toBe("ws://gw/ws/sessions/s1?after=0");
    expect(h.stream.state).toBe("connecting");
    h.last().open();
    h.last().hello(0, 2);
    expect(h.stream.state).toBe("replaying");
    h.last().event(1);
    h.last().event(2);
    h.last().frame({ type: "ws.replayed", last_seq: 2 });
    expect(h.stream.state).toBe("connected");
    h.last().event(3);
    expect(h.events).toEqual([1, 2, 3]);
    expect(h.states).toEqual(["connecting", "replaying", "connected"]);
  });

  it("is connected at once when there is no backlog", () => {
    const h = harness(5);
    h.stream.start();
    h.last().hello(5, 5);
    expect(h.stream.state).toBe("connected");
  });

  it("drops duplicate and old events", () => {
    const h = harness(0);
    h.stream.start();
    h.last().hello(0, 0);
    for (const seq of [1, 2, 2, 1, 3, 3]) h.last().event(seq);
    expect(h.events).toEqual([1, 2, 3]);
    expect(h.stream.lastSeq).toBe(3);
  });

  it("reconnects with backoff from the last seq and dedupes the overlap", () => {
    const h = harness(0);
    h.stream.start();
    h.last().hello(0, 0);
    h.last().event(1);
    h.last().event(2);
    h.last().drop(1006);
    expect(h.stream.state).toBe("reconnecting");
    expect(h.sockets).toHaveLength(1);
    vi.advanceTimersByTime(499);
    expect(h.sockets).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(h.sockets).toHaveLength(2);
    expect(h.last().url).toBe("ws://gw/ws/sessions/s1?after=2");
    expect(h.stream.state).toBe("reconnecting");
    // a gateway that resends an overlap must not produce duplicates
    h.last().hello(2, 4);
    h.last().event(2);
    h.last().event(3);
    h.last().event(4);
    h.last().frame({ type: "ws.replayed", last_seq: 4 });
    expect(h.events).toEqual([1, 2, 3, 4]);
    expect(h.stream.state).toBe("connected");
  });

  it("backs off longer on each failed attempt and resets after a hello", () => {
    const h = harness(0);
    h.stream.start();
    h.last().drop();
    vi.advanceTimersByTime(500);
    h.last().drop();
    vi.advanceTimersByTime(999);
    expect(h.sockets).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(h.sockets).toHaveLength(3);
    h.last().hello(0, 0);
    h.last().drop();
    vi.advanceTimersByTime(500);
    expect(h.sockets).toHaveLength(4);
  });

  it("treats a silent socket as dead and reconnects", () => {
    const h = harness(0);
    h.stream.start();
    h.last().open();
    h.last().hello(0, 0, 2); // heartbeat every 2 s: dead after 5 s of silence
    h.last().event(1);
    vi.advanceTimersByTime(4000);
    h.last().frame({ type: "ws.heartbeat", last_seq: 1 });
    vi.advanceTimersByTime(4000);
    expect(h.stream.state).toBe("connected");
    vi.advanceTimersByTime(1001);
    expect(h.sockets[0].closedWith).toBe(CLOSE_CLIENT_RESYNC);
    expect(h.stream.state).toBe("reconnecting");
    vi.advanceTimersByTime(500);
    expect(h.last().url).toContain("after=1");
  });

  it("resubscribes once when it sees a gap", () => {
    const h = harness(0);
    h.stream.start();
    h.last().hello(0, 0);
    h.last().event(1);
    h.last().event(3);
    expect(h.events).toEqual([1]);
    expect(h.sockets[0].closedWith).toBe(CLOSE_CLIENT_RESYNC);
    vi.advanceTimersByTime(500);
    expect(h.last().url).toContain("after=1");
    // the gateway really has no seq 2: accept the gap rather than loop
    h.last().hello(1, 3);
    h.last().event(3);
    expect(h.events).toEqual([1, 3]);
    expect(h.sockets).toHaveLength(2);
  });

  it.each([
    [CLOSE_AUTH, "unauthorized"],
    [CLOSE_NOT_FOUND, "not_found"],
  ] as const)("stops on fatal close %i", (code, state) => {
    const h = harness(0);
    h.stream.start();
    h.last().drop(code);
    vi.advanceTimersByTime(60_000);
    expect(h.stream.state).toBe(state);
    expect(h.sockets).toHaveLength(1);
  });

  it("passes other control frames on and ignores garbage", () => {
    const control: unknown[] = [];
    const h = harness(0, { onControl: (f) => control.push(f) });
    h.stream.start();
    h.last().onmessage?.({ data: "not json" });
    h.last().frame({ type: "ws.error", code: "bad", message: "no" });
    expect(control).toEqual([{ type: "ws.error", code: "bad", message: "no" }]);
    expect(h.stream.state).toBe("connecting");
  });

  it("stop closes the socket and cancels a pending reconnect", () => {
    const h = harness(0);
    h.stream.start();
    h.last().drop();
    h.stream.stop();
    vi.advanceTimersByTime(60_000);
    expect(h.sockets).toHaveLength(1);
    expect(h.stream.state).toBe("closed");
  });

  it("reconnectNow skips the wait", () => {
    const h = harness(0);
    h.stream.start();
    h.last().drop();
    h.stream.reconnectNow();
    expect(h.sockets).toHaveLength(2);
  });
});
