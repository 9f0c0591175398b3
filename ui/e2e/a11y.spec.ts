/* Accessibility: axe-core (run inside the page, no browser download) finds no
 * serious or critical problems on the main views, in light and dark themes. */
import { expect, test, type Page } from "@playwright/test";
import { createRequire } from "node:module";
import { Gateway } from "./gateway";

const gateway = new Gateway("none");
const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

test.beforeAll(async () => {
  await gateway.start();
});
test.afterAll(async () => {
  await gateway.stop();
  gateway.cleanup();
});

interface Violation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: string[] }[];
}

async function seriousViolations(page: Page): Promise<string[]> {
  await page.addScriptTag({ path: axePath });
  const violations = await page.evaluate(async () => {
    const axe = (window as unknown as { axe: { run: (ctx: Document) => Promise<{ violations: Violation[] }> } }).axe;
    return (await axe.run(document)).violations;
  });
  return violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}

for (const theme of ["light", "dark"] as const) {
  test(`session list and session view have no serious accessibility problems (${theme})`, async ({ page }) => {
    await page.emulateMedia({ colorScheme: theme });
    await page.goto(gateway.url);
    const form = page.getByRole("form", { name: "New session" });
    await form.getByLabel("Title").fill(`Accessible ${theme}`);
    await form.getByRole("button", { name: "Create session" }).click();
    await expect(page.locator(".conn")).toHaveAttribute("data-state", "connected");
    await page
      .getByLabel("Parameters (JSON)")
      .fill(JSON.stringify({ steps: 2, step_delay_s: 0, lines_per_step: 3, approve_plan: true }));
    await page.getByRole("button", { name: "Run task" }).click();
    await expect(page.locator(".timeline article.approval").getByRole("button", { name: "Approve" })).toBeVisible();
    expect(await seriousViolations(page)).toEqual([]);

    await page.locator(".timeline article.approval").getByRole("button", { name: "Approve" }).click();
    await expect(page.locator("article.task").first().getByTestId("task-phase")).toHaveText("Succeeded", {
      timeout: 60_000,
    });
    expect(await seriousViolations(page)).toEqual([]);

    await page.goto(gateway.url);
    await expect(page.locator("li.session-row").first()).toBeVisible();
    expect(await seriousViolations(page)).toEqual([]);
  });
}
