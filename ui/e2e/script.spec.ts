/* A `script` task that talks to the UI through the runner's SDK: it asks a
 * question answered in free text, reports costs, shows code, and writes an
 * image that the UI displays inline from the task's work directory. */
import { expect, test } from "@playwright/test";
import { join } from "node:path";
import { Gateway, SCREENSHOTS } from "./gateway";

const gateway = new Gateway("none");

test.beforeAll(async () => {
  await gateway.start();
});
test.afterAll(async () => {
  await gateway.stop();
  gateway.cleanup();
});

const SCRIPT = `
import struct, zlib
from cmbtask_runner import sdk

name = sdk.ask("Which dataset should I use?")
print(f"answer: {name}")

def png(width, height, rgb):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")

data = png(64, 32, (200, 40, 40))
with open("spectrum.png", "wb") as fh:
    fh.write(data)
sdk.emit("file.created", {"path": "spectrum.png", "size": len(data), "mime": "image/png"})
sdk.emit("agent.message", {"agent": "analyst", "content": "Fitted with:\\n\`\`\`python\\nimport numpy as np\\nnp.polyfit(x, y, 2)\\n\`\`\`\\nLooks good."})
sdk.emit("cost.update", {"agent": "analyst", "model": "demo", "prompt_tokens": 1234, "completion_tokens": 56, "cost_usd": 0.0123})
`;

test("a script asks for free text, shows code and costs, and an image file appears inline", async ({ page }) => {
  await page.goto(gateway.url);
  const form = page.getByRole("form", { name: "New session" });
  await form.getByLabel("Title").fill("Script with files");
  await form.getByRole("button", { name: "Create session" }).click();
  await expect(page.locator(".conn")).toHaveAttribute("data-state", "connected");

  await page.getByLabel("Engine").selectOption("script");
  await page.getByLabel("Parameters (JSON)").fill(JSON.stringify({ code: SCRIPT }));
  await page.getByRole("button", { name: "Run task" }).click();

  const card = page.locator(".timeline article.approval");
  await expect(card.getByText("Which dataset should I use?")).toBeVisible({ timeout: 30_000 });
  const send = card.getByRole("button", { name: "Send answer" });
  await expect(send).toBeDisabled();
  await card.getByLabel("Your answer").fill("Planck 2018 TT");
  await send.click();
  await expect(card.getByRole("status")).toHaveText("Answered by local: “Planck 2018 TT”");

  const task = page.locator("article.task").first();
  await expect(task.getByTestId("task-phase")).toHaveText("Succeeded", { timeout: 60_000 });
  await expect(task.getByRole("log", { name: "Task output" })).toContainText("answer: Planck 2018 TT");
  await expect(task.getByLabel("Costs")).toHaveText("Tokens: 1,234 in · 56 out · Cost: $0.0123");
  await expect(page.locator(".ev-agent-message .agent")).toHaveText("analyst");
  await expect(page.locator(".ev-agent-message code[data-language='python'] .hljs-keyword").first()).toHaveText(
    "import",
  );

  const image = task.getByRole("img", { name: "spectrum.png" });
  await expect(image).toBeVisible();
  expect(await image.evaluate((img: HTMLImageElement) => [img.naturalWidth, img.naturalHeight])).toEqual([64, 32]);
  await page.screenshot({ path: join(SCREENSHOTS, "script-files.png"), fullPage: true });
});
