/* 100,000 output lines from a real script task: the panel shows all of them,
 * keeps only a screenful in the DOM, and scrolling stays fast. */
import { expect, test } from "@playwright/test";
import { Gateway } from "./gateway";

const gateway = new Gateway("none");
const LINES = 100_000;

test.beforeAll(async () => {
  await gateway.start();
});
test.afterAll(async () => {
  await gateway.stop();
  gateway.cleanup();
});

test("100,000 lines of output stay virtualised and smooth", async ({ page }) => {
  await page.goto(gateway.url);
  const form = page.getByRole("form", { name: "New session" });
  await form.getByLabel("Title").fill("Loud script");
  await form.getByRole("button", { name: "Create session" }).click();
  await expect(page.locator(".conn")).toHaveAttribute("data-state", "connected");

  await page.getByLabel("Engine").selectOption("script");
  await page.getByLabel("Parameters (JSON)").fill(
    JSON.stringify({
      code: `for i in range(${LINES}):\n    print(f"row {i + 1}")`,
      max_output_lines_per_s: 1_000_000,
    }),
  );
  const started = Date.now();
  await page.getByRole("button", { name: "Run task" }).click();
  const task = page.locator("article.task").first();
  await expect(task.getByTestId("task-phase")).toHaveText("Succeeded", { timeout: 120_000 });
  await expect(task.getByTestId("output-count")).toHaveText("100,000 lines", { timeout: 60_000 });
  console.log(`figure: 100k lines end to end in ${Date.now() - started} ms`);

  const body = task.getByRole("log", { name: "Task output" });
  // following the tail: the last line is on screen
  await expect(body.getByText("row 100000", { exact: true })).toBeVisible();
  expect(await body.locator(".row").count()).toBeLessThan(60);

  // jump around and time how long each scroll takes to paint the right rows
  const timings = await body.evaluate(async (el) => {
    const result: number[] = [];
    for (const fraction of [0, 0.5, 0.25, 0.9, 0.1]) {
      const t0 = performance.now();
      el.scrollTop = fraction * (el.scrollHeight - el.clientHeight);
      await new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)));
      result.push(performance.now() - t0);
    }
    return result;
  });
  await body.evaluate((el) => (el.scrollTop = 0));
  await expect(body.getByText("row 1", { exact: true })).toBeVisible();
  expect(await body.locator(".row").count()).toBeLessThan(60);
  console.log(`figure: scroll-to-paint ms ${timings.map((t) => t.toFixed(1)).join(", ")}`);
  expect(Math.max(...timings)).toBeLessThan(500);
});
