// Outbox holds the messages a person sent that the server has not
// acknowledged yet. Each keeps its client_message_id across retries, so a
// resend of something the server already stored returns the original ack
// instead of posting it twice. Sends go out in order within a conversation:
// one at a time, the oldest first. The outbox is plain data so that it can
// be saved (a reload keeps unsent messages) and tested without a network.

export interface OutboxAttachment {
  id: string;
  name: string;
  contentType: string;
  size: number;
}

export type OutboxState = "queued" | "inflight" | "failed";

export interface OutboxEntry {
  clientId: string;
  conversationId: string;
  body: string;
  attachments: OutboxAttachment[];
  createdAt: number;
  attempts: number;
  nextAttemptAt: number;
  state: OutboxState;
  error?: string;
}

/** Retry says what to do after a failed send. */
export type Verdict = "retry" | "fatal" | "auth";

// gRPC status codes (same numbers as @connectrpc/connect's Code).
const CANCELED = 1, UNKNOWN = 2, INVALID_ARGUMENT = 3, DEADLINE_EXCEEDED = 4, NOT_FOUND = 5,
  PERMISSION_DENIED = 7, RESOURCE_EXHAUSTED = 8, FAILED_PRECONDITION = 9, ABORTED = 10,
  INTERNAL = 13, UNAVAILABLE = 14, UNAUTHENTICATED = 16;

/**
 * classify sorts a failed send by its gRPC code: transient failures are
 * retried under the same id, a rejected message is kept as failed for the
 * person to see, and an expired login sends them back to the login page.
 */
export function classify(code: number): Verdict {
  switch (code) {
    case CANCELED:
    case UNKNOWN:
    case DEADLINE_EXCEEDED:
    case RESOURCE_EXHAUSTED:
    case ABORTED:
    case INTERNAL:
    case UNAVAILABLE:
      return "retry";
    case UNAUTHENTICATED:
      return "auth";
    case INVALID_ARGUMENT:
    case NOT_FOUND:
    case PERMISSION_DENIED:
    case FAILED_PRECONDITION:
    default:
      return "fatal";
  }
}

/** backoff is the wait before retry number `attempts` (1-based), in ms. */
export function backoff(attempts: number, random = Math.random, base = 500, max = 15000): number {
  const exp = Math.min(max, base * 2 ** Math.max(0, attempts - 1));
  // Full jitter on the upper half keeps tabs that lost the same server from
  // coming back in lockstep.
  return Math.round(exp / 2 + random() * (exp / 2));
}

export interface OutboxStorage {
  load(): OutboxEntry[];
  save(entries: OutboxEntry[]): void;
}

export class Outbox {
  private entries: OutboxEntry[] = [];

  constructor(
    private readonly storage?: OutboxStorage,
    private readonly random: () => number = Math.random,
  ) {
    if (storage) {
      // An entry that was in flight when the page went away may or may not
      // have reached the server; resending it under its id is safe.
      this.entries = storage.load().map((e) => (e.state === "inflight" ? { ...e, state: "queued" } : e));
    }
  }

  private persist(): void {
    this.storage?.save(this.entries);
  }

  add(e: Omit<OutboxEntry, "attempts" | "nextAttemptAt" | "state">): OutboxEntry {
    const entry: OutboxEntry = { ...e, attempts: 0, nextAttemptAt: 0, state: "queued" };
    this.entries.push(entry);
    this.persist();
    return entry;
  }

  get(clientId: string): OutboxEntry | undefined {
    return this.entries.find((e) => e.clientId === clientId);
  }

  all(): readonly OutboxEntry[] {
    return this.entries;
  }

  forConversation(conv: string): OutboxEntry[] {
    return this.entries.filter((e) => e.conversationId === conv);
  }

  /**
   * due lists the entries to send now: per conversation the oldest queued
   * one, if nothing of that conversation is in flight and its time has come.
   */
  due(now: number): OutboxEntry[] {
    const out: OutboxEntry[] = [];
    const blocked = new Set<string>();
    for (const e of this.entries) {
      if (blocked.has(e.conversationId) || e.state === "failed") continue;
      blocked.add(e.conversationId);
      if (e.state === "queued" && e.nextAttemptAt <= now) out.push(e);
    }
    return out;
  }

  /** nextWake is when the earliest waiting retry comes due, or undefined. */
  nextWake(): number | undefined {
    let t: number | undefined;
    for (const e of this.entries) {
      if (e.state === "queued" && (t === undefined || e.nextAttemptAt < t)) t = e.nextAttemptAt;
    }
    return t;
  }

  begin(clientId: string): void {
    const e = this.get(clientId);
    if (!e) return;
    e.state = "inflight";
    e.attempts++;
    this.persist();
  }

  /** ack removes an acknowledged entry; it returns whether it was there. */
  ack(clientId: string): boolean {
    const i = this.entries.findIndex((e) => e.clientId === clientId);
    if (i < 0) return false;
    this.entries.splice(i, 1);
    this.persist();
    return true;
  }

  /** failed records a failed attempt and returns the entry's new state. */
  failed(clientId: string, verdict: Verdict, error: string, now: number): OutboxState | undefined {
    const e = this.get(clientId);
    if (!e) return undefined;
    e.error = error;
    if (verdict === "retry") {
      e.state = "queued";
      e.nextAttemptAt = now + backoff(e.attempts, this.random);
    } else {
      e.state = "failed";
    }
    this.persist();
    return e.state;
  }

  /** retryNow puts a failed or waiting entry back at the head of the line. */
  retryNow(clientId: string): void {
    const e = this.get(clientId);
    if (!e || e.state === "inflight") return;
    e.state = "queued";
    e.nextAttemptAt = 0;
    e.error = undefined;
    this.persist();
  }

  /** wake makes every waiting retry due at once (after a reconnect). */
  wake(): void {
    for (const e of this.entries) if (e.state === "queued") e.nextAttemptAt = 0;
    this.persist();
  }

  remove(clientId: string): void {
    this.ack(clientId);
  }
}

/** localStorageOutbox saves an outbox under key, tolerating bad data. */
export function localStorageOutbox(key: string): OutboxStorage {
  return {
    load() {
      try {
        const v = JSON.parse(localStorage.getItem(key) ?? "[]");
        return Array.isArray(v) ? v : [];
      } catch {
        return [];
      }
    },
    save(entries) {
      try {
        if (entries.length === 0) localStorage.removeItem(key);
        else localStorage.setItem(key, JSON.stringify(entries));
      } catch {
        // Storage full or disabled: the outbox still works for this page.
      }
    },
  };
}
