/* Starts and stops a real `cmbtask up` for a test file: a free loopback port,
 * its own data directory, a log file to read on failure, and kill -9 plus
 * restart on the same port and data for the restart test. */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const CMBTASK = process.env.CMBTASK_BIN ?? join(REPO, ".venv", "bin", "cmbtask");
export const SCREENSHOTS = join(REPO, "docs", "screenshots");

export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.unref();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => ok(port));
    });
  });
}

const sleep = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

export class Gateway {
  readonly dataDir = mkdtempSync(join(tmpdir(), "cmbtask-ui-e2e-"));
  port = 0;
  private proc: ChildProcess | null = null;
  private starts = 0;

  constructor(
    private readonly authMode: "none" | "token" = "none",
    private readonly extraEnv: Record<string, string> = {},
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private env(): NodeJS.ProcessEnv {
    return {
      ...process.env,
      CMBTASK_DATA_DIR: this.dataDir,
      CMBTASK_AUTH_MODE: this.authMode,
      CMBTASK_UI_DIR: join(REPO, "ui", "dist"),
      CMBTASK_LOG_FORMAT: "json",
      ...this.extraEnv,
    };
  }

  async start(): Promise<void> {
    if (this.port === 0) this.port = await freePort();
    this.starts += 1;
    const log = openSync(join(this.dataDir, `gateway-${this.starts}.log`), "a");
    this.proc = spawn(CMBTASK, ["up", "--host", "127.0.0.1", "--port", String(this.port), "--data-dir", this.dataDir], {
      env: this.env(),
      stdio: ["ignore", log, log],
    });
    await this.waitHealthy(30_000);
  }

  private async waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.proc?.exitCode !== null) throw new Error(`gateway exited: ${this.log()}`);
      try {
        const response = await fetch(`${this.url}/healthz`);
        if (response.ok) return;
      } catch {
        // not listening yet
      }
      await sleep(200);
    }
    throw new Error(`gateway not healthy after ${timeoutMs} ms: ${this.log()}`);
  }

  /** SIGKILL: no shutdown, sockets just die (runners keep running). */
  async kill9(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((ok) => proc.once("exit", ok));
    proc.kill("SIGKILL");
    await exited;
  }

  /** SIGSTOP / SIGCONT: the gateway's sockets stay open but go silent. */
  freeze(frozen: boolean): void {
    this.proc?.kill(frozen ? "SIGSTOP" : "SIGCONT");
  }

  async stop(): Promise<void> {
    this.freeze(false);
    const proc = this.proc;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((ok) => proc.once("exit", ok));
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    this.killRunners();
  }

  /** Runners outlive the gateway on purpose; end the ones this gateway launched. */
  killRunners(): void {
    const marker = `CMBTASK_GATEWAY_URL=${this.url}`;
    for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
      try {
        const environ = readFileSync(`/proc/${pid}/environ`, "utf-8").split("\0");
        if (environ.includes(marker)) process.kill(Number(pid), "SIGKILL");
      } catch {
        // gone, or not ours to read
      }
    }
  }

  cleanup(): void {
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  token(user: string): string {
    return execFileSync(CMBTASK, ["token", "create", user], { env: this.env(), encoding: "utf-8" })
      .trim()
      .split("\n")
      .pop()!
      .trim();
  }

  log(): string {
    try {
      return readFileSync(join(this.dataDir, `gateway-${this.starts}.log`), "utf-8").slice(-4000);
    } catch {
      return "(no log)";
    }
  }
}
