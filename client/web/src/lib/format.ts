// Formatting helpers for what the page shows: names, times, sizes.

export function initials(name: string): string {
  const parts = name.replace(/^[#@]/, "").split(/[\s_\-.]+/).filter(Boolean);
  if (parts.length === 0) return "?";
  if (parts.length === 1) return parts[0][0].toUpperCase();
  return (parts[0][0] + parts[1][0]).toUpperCase();
}

/** hue picks a stable avatar colour for a name. */
export function hue(name: string): number {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  return h % 360;
}

export function formatSize(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(1)} GB`;
}

export function sameDay(a: number, b: number): boolean {
  const x = new Date(a), y = new Date(b);
  return x.getFullYear() === y.getFullYear() && x.getMonth() === y.getMonth() && x.getDate() === y.getDate();
}

export function clock(t: number): string {
  return new Date(t).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

export function dayLabel(t: number, now = Date.now()): string {
  if (sameDay(t, now)) return "Today";
  if (sameDay(t, now - 86400000)) return "Yesterday";
  const d = new Date(t);
  const opts: Intl.DateTimeFormatOptions = { weekday: "long", month: "long", day: "numeric" };
  if (d.getFullYear() !== new Date(now).getFullYear()) opts.year = "numeric";
  return d.toLocaleDateString(undefined, opts);
}

/** shortTime is the sidebar's time: a clock today, a weekday this week, else a date. */
export function shortTime(t: number, now = Date.now()): string {
  if (!t) return "";
  if (sameDay(t, now)) return clock(t);
  if (sameDay(t, now - 86400000)) return "Yesterday";
  if (now - t < 6 * 86400000) return new Date(t).toLocaleDateString(undefined, { weekday: "short" });
  return new Date(t).toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

export function lastSeen(t: number, now = Date.now()): string {
  if (!t) return "offline";
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return "last seen just now";
  if (s < 3600) return `last seen ${Math.round(s / 60)} min ago`;
  if (sameDay(t, now)) return `last seen today at ${clock(t)}`;
  if (sameDay(t, now - 86400000)) return `last seen yesterday at ${clock(t)}`;
  return `last seen ${new Date(t).toLocaleDateString(undefined, { month: "short", day: "numeric" })}`;
}

export function typingLine(users: string[]): string {
  if (users.length === 0) return "";
  if (users.length === 1) return `${users[0]} is typing…`;
  if (users.length === 2) return `${users[0]} and ${users[1]} are typing…`;
  return `${users.length} people are typing…`;
}
