// The widget's style sheet. It lives in the widget's shadow root, so the host
// page's CSS cannot break it and it cannot leak into the page.
export const STYLES = `
:host { all: initial; }
.ac-root {
  --ac-accent: #1d4ed8;
  --ac-on-accent: #ffffff;
  --ac-ink: #111827;
  --ac-muted: #4b5563;
  --ac-line: #d1d5db;
  --ac-bg: #ffffff;
  --ac-soft: #f3f4f6;
  --ac-danger: #b91c1c;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  font-size: 15px;
  line-height: 1.4;
  color: var(--ac-ink);
}
.ac-root[data-mode="floating"] {
  position: fixed;
  right: 20px;
  bottom: 20px;
  z-index: 2147483000;
  display: flex;
  flex-direction: column;
  align-items: flex-end;
  gap: 12px;
}
.ac-root[data-mode="inline"] { display: flex; flex-direction: column; align-items: flex-start; gap: 12px; max-width: 480px; }
.ac-root *, .ac-root *::before, .ac-root *::after { box-sizing: border-box; }
[hidden] { display: none !important; }

button {
  font: inherit;
  cursor: pointer;
  border-radius: 999px;
  border: 2px solid transparent;
  padding: 8px 16px;
  min-height: 40px;
}
/* A two-colour ring: visible on the accent colour, on white and on the host page. */
button:focus-visible, .ac-panel:focus-visible, .ac-title:focus-visible {
  outline: 3px solid #111827;
  outline-offset: 2px;
  box-shadow: 0 0 0 2px #ffffff, 0 0 0 7px #f59e0b;
}
.ac-title:focus { outline: none; }
.ac-title:focus-visible { border-radius: 4px; }

.ac-launcher {
  display: inline-flex;
  align-items: center;
  gap: 8px;
  background: var(--ac-accent);
  color: var(--ac-on-accent);
  font-weight: 600;
  padding: 12px 20px;
  min-height: 48px;
  box-shadow: 0 6px 18px rgba(0, 0, 0, 0.2);
}
.ac-launcher:hover { filter: brightness(1.08); }
.ac-launcher svg { width: 20px; height: 20px; flex: none; }

.ac-panel {
  width: min(380px, calc(100vw - 40px));
  max-height: min(560px, calc(100vh - 40px));
  display: flex;
  flex-direction: column;
  background: var(--ac-bg);
  border: 1px solid var(--ac-line);
  border-radius: 16px;
  box-shadow: 0 12px 40px rgba(0, 0, 0, 0.18);
  overflow: hidden;
}
.ac-root[data-mode="inline"] .ac-panel { width: 100%; max-height: 560px; box-shadow: none; }
.ac-header {
  display: flex;
  align-items: center;
  justify-content: space-between;
  gap: 8px;
  padding: 12px 16px;
  background: var(--ac-accent);
  color: var(--ac-on-accent);
}
.ac-title { margin: 0; font-size: 16px; font-weight: 700; }
.ac-close {
  background: transparent;
  color: var(--ac-on-accent);
  border-color: currentColor;
  padding: 4px 12px;
  min-height: 32px;
}

.ac-status {
  display: flex;
  align-items: center;
  gap: 10px;
  padding: 10px 16px;
  border-bottom: 1px solid var(--ac-line);
  font-weight: 600;
}
.ac-dot { width: 12px; height: 12px; border-radius: 50%; background: #9ca3af; flex: none; }
.ac-status[data-state="connecting"] .ac-dot,
.ac-status[data-state="reconnecting"] .ac-dot { background: #d97706; animation: ac-pulse 1.2s ease-in-out infinite; }
.ac-status[data-state="listening"] .ac-dot { background: #15803d; }
.ac-status[data-state="thinking"] .ac-dot { background: #7c3aed; animation: ac-pulse 0.8s ease-in-out infinite; }
.ac-status[data-state="speaking"] .ac-dot { background: var(--ac-accent); animation: ac-pulse 0.5s ease-in-out infinite; }
.ac-status[data-state="error"] .ac-dot { background: var(--ac-danger); }
@keyframes ac-pulse { 50% { transform: scale(1.35); opacity: 0.6; } }
@media (prefers-reduced-motion: reduce) { .ac-dot { animation: none !important; } }

.ac-alert {
  margin: 12px 16px 0;
  padding: 10px 12px;
  border-radius: 10px;
  border: 1px solid #fca5a5;
  background: #fef2f2;
  color: var(--ac-danger);
}
.ac-alert p { margin: 0; }
.ac-notice { margin: 12px 16px 0; color: var(--ac-muted); }

.ac-transcript {
  list-style: none;
  margin: 0;
  padding: 12px 16px;
  overflow-y: auto;
  flex: 1 1 auto;
  min-height: 120px;
  display: flex;
  flex-direction: column;
  gap: 8px;
}
.ac-line { max-width: 85%; padding: 8px 12px; border-radius: 14px; background: var(--ac-soft); }
.ac-line[data-speaker="user"] { align-self: flex-end; background: var(--ac-accent); color: var(--ac-on-accent); }
.ac-line[data-final="false"] { opacity: 0.75; font-style: italic; }
.ac-who { display: block; font-size: 12px; font-weight: 700; opacity: 0.85; }
.ac-empty { margin: 0; color: var(--ac-muted); font-size: 14px; }

.ac-controls {
  display: flex;
  flex-wrap: wrap;
  gap: 8px;
  justify-content: flex-end;
  padding: 12px 16px;
  border-top: 1px solid var(--ac-line);
}
.ac-secondary { background: var(--ac-bg); color: var(--ac-ink); border-color: var(--ac-line); }
.ac-secondary[aria-pressed="true"] { background: var(--ac-soft); border-color: var(--ac-ink); }
.ac-danger { background: var(--ac-danger); color: #ffffff; }
.ac-primary { background: var(--ac-accent); color: var(--ac-on-accent); font-weight: 600; }
.ac-config-error { color: var(--ac-danger); font-size: 14px; }
`;
