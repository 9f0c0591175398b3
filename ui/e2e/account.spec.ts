/* A user's own key and budget through the UI, against a real gateway and
 * runners: the Settings page stores a key and never shows it again; a demo
 * task with a budget shows spend against it and stops, failed, when crossed. */
import { expect, test } from "@playwright/test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Gateway, SCREENSHOTS } from "./gateway";

const gateway = new Gateway("none");
const KEY = "sk-planted-in-the-browser-5d41402abc";

test.beforeAll(async () => {
  await gateway.start();
});
test.afterAll(async () => {
  await gateway.stop();
  gateway.cleanup();
});

test("store a key on the Settings page; it is listed by provider, never shown", async ({ page }) => {
  await page.goto(gateway.url);
  await page.getByRole("link", { name: "Settings" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Settings" })).toBeVisible();
  await expect(page.getByTestId("no-keys")).toBeVisible();
  await page.getByRole("combobox", { name: /^Provider/ }).selectOption("anthropic");
  await page.getByLabel("Key", { exact: true }).fill(KEY);
  await page.getByRole("button", { name: "Save key" }).click();
  await expect(page.getByText("Stored your anthropic key.")).toBeVisible();
  await expect(page.getByLabel("Key", { exact: true })).toHaveValue("");
  const stored = page.getByRole("list", { name: "Stored keys" });
  await expect(stored).toContainText("ANTHROPIC_API_KEY");
  await page.reload();
  await expect(page.getByRole("list", { name: "Stored keys" })).toContainText("anthropic");
  expect(await page.content()).not.toContain(KEY);
  await page.screenshot({ path: join(SCREENSHOTS, "settings.png"), fullPage: true });
  const answer = await page.request.get(`${gateway.url}/api/keys`);
  expect(await answer.text()).not.toContain(KEY);
});

test("a demo task with a budget shows spend against it and fails when it crosses it", async ({ page }) => {
  await page.goto(gateway.url);
  const form = page.getByRole("form", { name: "New session" });
  await form.getByLabel("Title").fill("Budgeted fit");
  await form.getByRole("button", { name: "Create session" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Budgeted fit" })).toBeVisible();
  const params = { steps: 5, step_delay_s: 0.1, lines_per_step: 1, cost_usd_per_step: 0.2 };
  await page.getByLabel("Parameters (JSON)").fill(JSON.stringify(params));
  await page.getByLabel("Budget (USD)").fill("0.5");
  await page.getByRole("button", { name: "Run task" }).click();

  const task = page.locator("article.task").first();
  await expect(task.getByTestId("task-phase")).toHaveText("Failed", { timeout: 60_000 });
  await expect(task.getByText("Reason: budget exceeded: $0.60 of $0.50")).toBeVisible();
  await expect(task.getByLabel("Costs")).toContainText("Cost: $0.6000 of $0.50 budget");
  expect(
    readFileSync(join(gateway.dataDir, "tasks", String(await task.getAttribute("data-task-id")), "runner.out")),
  ).toBeTruthy();
});
