import { afterEach, describe, expect, it } from "vitest";
import { connection, reportReachable } from "./shared";

describe("reportReachable", () => {
  afterEach(() => connection.set({ state: "online", info: { attempt: 0 } }));

  it("tells pages without a socket whether the API answers", () => {
    reportReachable(false);
    expect(connection.get().state).toBe("offline");
    reportReachable(true);
    expect(connection.get().state).toBe("online");
  });

  it("never overwrites a session socket's state with a late API answer", () => {
    for (const state of ["connected", "reconnecting", "replaying"] as const) {
      connection.set({ state, info: { attempt: 1 } });
      reportReachable(true);
      reportReachable(false);
      expect(connection.get().state).toBe(state);
    }
  });
});
