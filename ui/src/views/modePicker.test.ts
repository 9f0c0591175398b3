import { describe, expect, it } from "vitest";
import type { ModeInfo } from "../api/protocol";
import { modeNote, pickEngine, pickMode } from "./modePicker";

function mode(name: string, patch: Partial<ModeInfo> = {}): ModeInfo {
  return {
    name,
    title: name,
    description: "",
    engines: ["cmbagent", "demo", "script"],
    supports_resume: false,
    human_in_the_loop: false,
    available: true,
    unavailable_reason: null,
    ...patch,
  };
}

const LABELS = { engines: ["demo", "script"], available: false };
const KEYLESS = mode("one-shot", { ...LABELS, unavailable_reason: "no key", needs_keys: ["OPENAI_API_KEY"] });
const NOT_IN_RELEASE = mode("control", { ...LABELS, unavailable_reason: "not in mars-cmbagent 2.2.5" });

describe("modeNote", () => {
  it("is empty for a mode that runs here", () => {
    expect(modeNote(mode("one-shot"))).toBe("");
  });
  it("names the keys when only a key is missing", () => {
    expect(modeNote(KEYLESS)).toBe(" (needs OPENAI_API_KEY)");
    expect(modeNote({ ...KEYLESS, needs_keys: ["OPENAI_API_KEY", "GEMINI_API_KEY"] })).toBe(
      " (needs OPENAI_API_KEY or GEMINI_API_KEY)",
    );
  });
  it("says unavailable when the release lacks the mode", () => {
    expect(modeNote(NOT_IN_RELEASE)).toBe(" (unavailable)");
  });
});

describe("pickMode", () => {
  const modes = [NOT_IN_RELEASE, mode("arxiv", { utility: true }), mode("planning-control")];
  it("keeps the preferred mode when it runs", () => {
    expect(pickMode(modes, "planning-control")).toBe("planning-control");
  });
  it("moves to the first research mode that runs, past utilities", () => {
    expect(pickMode(modes, "control")).toBe("planning-control");
  });
  it("keeps the preferred mode when none runs (demo runs it as a label)", () => {
    expect(pickMode([KEYLESS, NOT_IN_RELEASE], "control")).toBe("control");
  });
  it("keeps it before the modes have loaded", () => {
    expect(pickMode([], "planning-control")).toBe("planning-control");
  });
});

describe("pickEngine", () => {
  it("is cmbagent where it runs the mode", () => {
    expect(pickEngine(mode("one-shot"))).toBe("cmbagent");
  });
  it("is demo, which needs no key, otherwise", () => {
    expect(pickEngine(KEYLESS)).toBe("demo");
    expect(pickEngine(undefined)).toBe("demo");
  });
});
