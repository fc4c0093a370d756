#!/usr/bin/env bash
# Build the embeddable voice widget: widget/src -> static/agentconnect/widget.js,
# and the staff console's scripts (Chart.js): static/agentconnect/console.js
# (each with its source map), which Django serves as static files.
#
#   scripts/build-widget.sh          # npm ci when the lockfile changed, build when anything changed
#   scripts/build-widget.sh --force  # both, unconditionally
#
# Reproducible: `npm ci` installs exactly widget/package-lock.json, and the
# versions in widget/package.json are pinned. The output is generated and not
# committed; scripts/install-deps.sh (so `make run` and `make test`) runs this.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WIDGET="$ROOT/widget"
OUT="$ROOT/static/agentconnect/widget.js"
CONSOLE_OUT="$ROOT/static/agentconnect/console.js"
DEPS_STAMP="$WIDGET/node_modules/.agentconnect-deps.sha256"
BUILD_STAMP="$WIDGET/node_modules/.agentconnect-build.sha256"

say() { printf '==> %s\n' "$*"; }
die() { printf 'build-widget: error: %s\n' "$*" >&2; exit 1; }

force=0
[[ "${1:-}" == "--force" ]] && force=1

command -v node >/dev/null 2>&1 || die "node not found (need Node.js >= 20 with npm to build the widget)"
command -v npm >/dev/null 2>&1 || die "npm not found (need Node.js >= 20 with npm to build the widget)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "node $(node --version) is too old; the widget needs Node.js >= 20"

cd "$WIDGET"
[[ -f package-lock.json ]] || die "widget/package-lock.json missing; it is committed with package.json"

# The installed packages depend on the lockfile, package.json and node's major version.
deps_hash="$( { echo "node $node_major"; cat package.json package-lock.json; } | sha256sum | cut -d' ' -f1)"
if ((force == 0)) && [[ -d node_modules && "$(cat "$DEPS_STAMP" 2>/dev/null || true)" == "$deps_hash" ]]; then
    say "widget npm packages up to date (package-lock.json unchanged)"
else
    say "widget: npm ci (livekit-client, chart.js, esbuild from widget/package-lock.json)"
    npm ci --no-audit --no-fund --loglevel=error
    printf '%s\n' "$deps_hash" > "$DEPS_STAMP"
fi

# The output depends on the packages, the build script and every source file.
build_hash="$( { echo "$deps_hash"; cat build.mjs; find src -type f | LC_ALL=C sort | xargs cat; } | sha256sum | cut -d' ' -f1)"
if ((force == 0)) && [[ -s "$OUT" && -s "$CONSOLE_OUT" && "$(cat "$BUILD_STAMP" 2>/dev/null || true)" == "$build_hash" ]]; then
    say "widget up to date: static/agentconnect/widget.js (sources unchanged)"
else
    say "widget: building static/agentconnect/widget.js"
    npm run --silent build
    [[ -s "$OUT" ]] || die "the build did not write $OUT"
    [[ -s "$CONSOLE_OUT" ]] || die "the build did not write $CONSOLE_OUT"
    printf '%s\n' "$build_hash" > "$BUILD_STAMP"
fi
