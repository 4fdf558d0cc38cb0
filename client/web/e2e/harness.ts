// Harness for the end-to-end test: a real parleyd on a loopback port, the
// parley CLI as a Go client, and headless Chromium from Debian's package
// driven by playwright-core (which never downloads a browser).
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { mkdtemp, mkdir } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { crc32, deflateSync } from "node:zlib";
import { chromium, type Browser } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "../../..");
export const artifacts = resolve(here, "../test-results");
const bin = (name: string) => process.env[`PARLEY_${name.toUpperCase()}_BIN`] ?? join(repo, "bin", name);

export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => ok(port));
    });
  });
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `parley-e2e-${prefix}-`));
}

/** Server is one parleyd process; restart keeps its port and data dir. */
export class Server {
  proc?: ChildProcess;
  log = "";
  constructor(readonly port: number, readonly dataDir: string, readonly extra: string[] = []) {}

  get addr(): string {
    return `127.0.0.1:${this.port}`;
  }

  get url(): string {
    return `http://${this.addr}`;
  }

  async start(): Promise<void> {
    const proc = spawn(bin("parleyd"), ["--addr", this.addr, "--data-dir", this.dataDir, "--bcrypt-cost", "4", "--log-level", "warn", ...this.extra], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc = proc;
    proc.stdout!.on("data", (d) => (this.log += d));
    proc.stderr!.on("data", (d) => (this.log += d));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`parleyd exited with ${proc.exitCode}:\n${this.log}`);
      try {
        const r = await fetch(`${this.url}/healthz`);
        if (r.ok) return;
      } catch {
        /* not listening yet */
      }
      await sleep(50);
    }
    throw new Error(`parleyd did not become healthy:\n${this.log}`);
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((ok) => p.once("exit", ok));
    p.kill("SIGTERM");
    const t = setTimeout(() => p.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(t);
  }
}

/** Cli runs the parley command with its own config dir (its own login). */
export class Cli {
  constructor(readonly server: Server, readonly configDir: string) {}

  static async make(server: Server, name: string): Promise<Cli> {
    const dir = await tempDir(`cli-${name}`);
    await mkdir(dir, { recursive: true });
    return new Cli(server, dir);
  }

  run(args: string[], opts: { password?: string; timeoutMs?: number } = {}): Promise<string> {
    return new Promise((ok, fail) => {
      execFile(bin("parley"), ["--server", this.server.addr, ...args], {
        env: { ...process.env, PARLEY_CONFIG_DIR: this.configDir, PARLEY_PASSWORD: opts.password ?? "" },
        timeout: opts.timeoutMs ?? 30_000,
      }, (err, stdout, stderr) => {
        if (err) fail(new Error(`parley ${args.join(" ")}: ${err.message}\n${stderr}`));
        else ok(stdout);
      });
    });
  }
}

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export async function launch(): Promise<Browser> {
  // launch() gives every run a fresh temporary profile (user-data-dir).
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** until polls fn until it returns a truthy value or the time is up. */
export async function until<T>(what: string, fn: () => Promise<T> | T, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
}

/** A small valid PNG (a 64x64 gradient), made without any image library. */
export function makePng(): Buffer {
  const w = 64, hgt = 64;
  const raw = Buffer.alloc((w * 3 + 1) * hgt);
  for (let y = 0; y < hgt; y++) {
    raw[y * (w * 3 + 1)] = 0;
    for (let x = 0; x < w; x++) {
      const o = y * (w * 3 + 1) + 1 + x * 3;
      raw[o] = 79 + x * 2;
      raw[o + 1] = 70 + y * 2;
      raw[o + 2] = 229;
    }
  }
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td) >>> 0);
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(hgt, 4);
  ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", ihdr), chunk("IDAT", deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]);
}
