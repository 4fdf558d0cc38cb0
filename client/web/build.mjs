// Builds the browser app into dist/, which parleyd embeds (see web.go).
// The output is deterministic: the same sources give byte-identical files,
// so `make test` can check that the committed dist/ matches src/.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");

const result = await build({
  entryPoints: [join(here, "src/main.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022", "chrome110", "firefox115", "safari16"],
  // gen/ts lives outside this package; resolve its imports from here.
  nodePaths: [join(here, "node_modules")],
  legalComments: "none",
  charset: "utf8",
  write: false,
  outdir: dist,
  entryNames: "app",
  logLevel: "warning",
});

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
const files = {};
for (const f of result.outputFiles) {
  const name = f.path.slice(dist.length + 1);
  files[name] = f.contents;
  await writeFile(f.path, f.contents);
}
const css = await readFile(join(here, "src/style.css"));
await writeFile(join(dist, "app.css"), css);
files["app.css"] = css;

// Content hashes in the URLs let browsers cache nothing stale.
const v = (name) => createHash("sha256").update(files[name]).digest("hex").slice(0, 12);
const html = (await readFile(join(here, "src/index.html"), "utf8"))
  .replace("%APP_JS%", `app.js?v=${v("app.js")}`)
  .replace("%APP_CSS%", `app.css?v=${v("app.css")}`);
await writeFile(join(dist, "index.html"), html);
await writeFile(join(dist, "icon.svg"), await readFile(join(here, "src/icon.svg")));
