import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import type { ModeInfo } from "../api/protocol";
import { engineChoices, resumeNote, TaskForm } from "./TaskForm";

afterEach(cleanup);

function mode(patch: Partial<ModeInfo> & { name: string }): ModeInfo {
  return {
    title: patch.name,
    description: `The ${patch.name} mode.`,
    engines: ["cmbagent", "demo", "script"],
    supports_resume: false,
    human_in_the_loop: false,
    available: true,
    unavailable_reason: null,
    ...patch,
  };
}

const NO_COPILOT = "copilot is not part of cmbagent 0.0.1.post30";
const MODES: ModeInfo[] = [
  mode({ name: "planning-control", title: "Planning and control", supports_resume: true }),
  mode({
    name: "copilot",
    title: "Copilot",
    engines: ["demo", "script"],
    available: false,
    unavailable_reason: NO_COPILOT,
  }),
];

describe("engineChoices", () => {
  it("offers the engines the gateway lists for an available mode", () => {
    expect(engineChoices(MODES[0])).toEqual([
      { name: "cmbagent", usable: true, reason: null },
      { name: "demo", usable: true, reason: null },
      { name: "script", usable: true, reason: null },
    ]);
  });

  it("shows the real engine of an unavailable mode disabled, with the reason", () => {
    const choices = engineChoices(MODES[1]);
    expect(choices[0]).toEqual({ name: "cmbagent", usable: false, reason: NO_COPILOT });
    expect(choices.slice(1).map((c) => c.usable)).toEqual([true, true]);
  });

  it("falls back to the label engines before the modes have loaded", () => {
    expect(engineChoices(undefined).map((c) => c.name)).toEqual(["demo", "script"]);
  });
});

describe("resumeNote", () => {
  it("says whether the mode resumes", () => {
    expect(resumeNote(MODES[0])).toMatch(/^Resumable/);
    expect(resumeNote(MODES[1])).toBe("Resume is not available for this mode.");
  });
});

describe("TaskForm", () => {
  it("starts on a mode that runs here, with the engine that runs it", () => {
    render(<TaskForm sessionId="s1" modes={MODES} defaultMode="copilot" disabled={false} />);
    expect(screen.getByLabelText<HTMLSelectElement>("Mode").value).toBe("planning-control");
    expect(screen.getByLabelText<HTMLSelectElement>("Engine").value).toBe("cmbagent");
  });

  it("starts on demo when no mode runs here, and names the missing key", () => {
    const keys = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"];
    const blocked = MODES.map((m) => ({
      ...m,
      engines: ["demo", "script"],
      available: false,
      unavailable_reason: "no LLM API key is configured for the runner",
      needs_keys: keys,
    }));
    render(<TaskForm sessionId="s1" modes={blocked} defaultMode="planning-control" disabled={false} />);
    expect(screen.getByLabelText<HTMLSelectElement>("Mode").value).toBe("planning-control");
    expect(screen.getByLabelText<HTMLSelectElement>("Engine").value).toBe("demo");
    screen.getByRole("option", { name: "Planning and control (needs OPENAI_API_KEY or ANTHROPIC_API_KEY)" });
    expect(screen.queryByRole("option", { name: /Planning and control \(unavailable\)/ })).toBeNull();
  });

  it("marks an unavailable mode, disables its engine and says why", () => {
    render(<TaskForm sessionId="s1" modes={MODES} defaultMode="copilot" disabled={false} />);
    fireEvent.change(screen.getByLabelText("Mode"), { target: { value: "copilot" } });
    const modeOption = screen.getByRole<HTMLOptionElement>("option", { name: "Copilot (unavailable)" });
    expect(modeOption.disabled).toBe(false); // demo and script still run it as a label
    const cmbagent = screen.getByRole<HTMLOptionElement>("option", { name: "cmbagent (unavailable)" });
    expect(cmbagent.disabled).toBe(true);
    expect(cmbagent.title).toBe(NO_COPILOT);
    expect(screen.getByTestId("mode-unavailable").textContent).toContain(NO_COPILOT);
    expect(screen.getByTestId("mode-unavailable").textContent).toContain("still runs as a label with demo or script");
    expect(screen.getByTestId("mode-resume").textContent).toBe("Resume is not available for this mode.");
  });

  it("moves off an engine that cannot run the newly chosen mode", () => {
    render(<TaskForm sessionId="s1" modes={MODES} defaultMode="planning-control" disabled={false} />);
    expect(screen.getByTestId("mode-resume").textContent).toMatch(/^Resumable/);
    expect(screen.queryByTestId("mode-unavailable")).toBeNull();
    const engine = screen.getByLabelText<HTMLSelectElement>("Engine");
    fireEvent.change(engine, { target: { value: "cmbagent" } });
    expect(engine.value).toBe("cmbagent");
    fireEvent.change(screen.getByLabelText("Mode"), { target: { value: "copilot" } });
    expect(engine.value).toBe("demo");
  });
});
