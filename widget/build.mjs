// Build the embeddable widget: widget/src/index.js -> static/agentconnect/widget.js
// (one self-contained IIFE with livekit-client bundled in), and the staff console's
// scripts: widget/src/console/index.js -> static/agentconnect/console.js (Chart.js
// bundled in), served by Django's staticfiles. Run through `npm run build`;
// scripts/build-widget.sh calls it.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = JSON.parse(await readFile(path.join(here, 'package.json'), 'utf8'));
const outfile = path.resolve(here, '..', 'static', 'agentconnect', 'widget.js');
const consoleOutfile = path.resolve(here, '..', 'static', 'agentconnect', 'console.js');

const result = await esbuild.build({
  entryPoints: [path.join(here, 'src', 'index.js')],
  outfile,
  bundle: true,
  format: 'iife',
  platform: 'browser',
  // Browsers with WebRTC and text streams all run ES2020; older ones cannot talk anyway.
  target: ['es2020'],
  minify: true,
  sourcemap: 'linked',
  legalComments: 'eof',
  define: { __WIDGET_VERSION__: JSON.stringify(pkg.version) },
  banner: { js: `/* AgentConnect Voice widget ${pkg.version}. Built from widget/src; do not edit. */` },
  metafile: true,
  logLevel: 'warning',
});

// The staff call page's script: livekit-client from the same lockfile, its own bundle.
await esbuild.build({
  entryPoints: [path.join(here, 'src', 'staff-call.js')],
  outfile: path.resolve(here, '..', 'static', 'agentconnect', 'staff-call.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['es2020'],
  minify: true,
  sourcemap: 'linked',
  legalComments: 'eof',
  logLevel: 'warning',
});

const bytes = result.metafile.outputs[path.relative(process.cwd(), outfile)]?.bytes
  ?? Object.values(result.metafile.outputs).find((o) => o.entryPoint)?.bytes;
console.log(`built ${path.relative(path.resolve(here, '..'), outfile)} (${Math.round((bytes ?? 0) / 1024)} KiB)`);

const consoleResult = await esbuild.build({
  entryPoints: [path.join(here, 'src', 'console', 'index.js')],
  outfile: consoleOutfile,
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['es2020'],
  minify: true,
  sourcemap: 'linked',
  legalComments: 'eof',
  banner: { js: `/* AgentConnect Voice staff console ${pkg.version}. Built from widget/src/console; do not edit. */` },
  metafile: true,
  logLevel: 'warning',
});
const consoleBytes = Object.values(consoleResult.metafile.outputs).find((o) => o.entryPoint)?.bytes;
console.log(`built ${path.relative(path.resolve(here, '..'), consoleOutfile)} (${Math.round((consoleBytes ?? 0) / 1024)} KiB)`);
