import { describe, expect, it } from "vitest";
import { visibleRows } from "./virtualWindow";

describe("visibleRows", () => {
  it("renders only a screenful plus overscan of 100,000 lines", () => {
    const w = visibleRows(100_000, 18, 18 * 50_000, 320, 10);
    expect(w.start).toBe(49_990);
    expect(w.end - w.start).toBeLessThan(60);
  });

  it("clamps at both ends", () => {
    expect(visibleRows(5, 18, 0, 320)).toEqual({ start: 0, end: 5 });
    expect(visibleRows(100, 18, 1e9, 320, 2)).toEqual({ start: 97, end: 100 });
    expect(visibleRows(0, 18, 0, 320)).toEqual({ start: 0, end: 0 });
  });
});
