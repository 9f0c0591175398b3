/* What the mode pickers (new session, run a task) show and choose first.
 *
 * A mode the cmbagent engine can run here is chosen over one it cannot; a
 * mode held back only by a missing key says which variable to set rather
 * than "unavailable"; the engine chosen first is cmbagent where it can run
 * the mode, else demo, which runs any mode as a label and needs no key. */
import type { ModeInfo } from "../api/protocol";

export const IMPLEMENTATION = "cmbagent";
export const NO_KEY_ENGINE = "demo";

/** The note after a mode's title in a picker: "" when it runs here. */
export function modeNote(mode: ModeInfo): string {
  if (mode.available !== false) return "";
  const keys = mode.needs_keys ?? [];
  if (keys.length > 0) return ` (needs ${keys.join(" or ")})`;
  return " (unavailable)";
}

/** The mode to show first: ``preferred`` when it runs here, else the first
 * mode that does, else ``preferred`` (demo still runs it as a label). */
export function pickMode(modes: ModeInfo[], preferred: string): string {
  const wanted = modes.find((m) => m.name === preferred);
  if (wanted === undefined || wanted.available !== false) return preferred;
  return modes.find((m) => m.available !== false && !m.utility)?.name ?? preferred;
}

/** The engine to show first for a mode. */
export function pickEngine(mode: ModeInfo | undefined): string {
  if (mode && mode.available !== false && mode.engines.includes(IMPLEMENTATION)) return IMPLEMENTATION;
  return NO_KEY_ENGINE;
}
