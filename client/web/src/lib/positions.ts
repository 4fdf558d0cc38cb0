// Positions are where each conversation's Subscribe stream resumes: the
// newest seq this client has seen from the log, and the log's epoch. They
// only move forward within an epoch; a new epoch starts them over.

export interface Position {
  seq: number;
  epoch: string;
}

export class Positions {
  private map = new Map<string, Position>();

  get(conv: string): Position | undefined {
    return this.map.get(conv);
  }

  /**
   * advance moves conv's position to seq if that is further on. It returns
   * false for a seq at or behind the position: a message the client has
   * already seen.
   */
  advance(conv: string, seq: number, epoch?: string): boolean {
    const p = this.map.get(conv);
    if (!p) {
      this.map.set(conv, { seq, epoch: epoch ?? "" });
      return true;
    }
    if (epoch && p.epoch && epoch !== p.epoch) {
      this.map.set(conv, { seq, epoch });
      return true;
    }
    if (epoch && !p.epoch) p.epoch = epoch;
    if (seq <= p.seq) return false;
    p.seq = seq;
    return true;
  }

  /** reset starts conv over, e.g. after the server reported a new epoch. */
  reset(conv: string, seq: number, epoch: string): void {
    this.map.set(conv, { seq, epoch });
  }

  setEpoch(conv: string, epoch: string): void {
    const p = this.map.get(conv);
    if (p) p.epoch = epoch;
    else this.map.set(conv, { seq: 0, epoch });
  }

  delete(conv: string): void {
    this.map.delete(conv);
  }

  clear(): void {
    this.map.clear();
  }
}

export interface ResumePlan {
  conversationId: string;
  afterSeq: number;
  epoch: string;
  /**
   * reload is true when the gap is too long to replay: the client should
   * drop what it holds for the conversation and load its newest page.
   */
  reload: boolean;
}

/**
 * planResume decides where to resume one conversation. A conversation the
 * client has never followed starts at the server's head (its summary came
 * with the listing; older messages come from History when opened). One it
 * follows resumes from its position, unless more than maxReplay messages
 * were missed, in which case it jumps to the head and reloads.
 */
export function planResume(conv: string, known: Position | undefined, head: number, maxReplay = 500): ResumePlan {
  if (!known) return { conversationId: conv, afterSeq: head, epoch: "", reload: false };
  if (head >= known.seq && head - known.seq > maxReplay) {
    return { conversationId: conv, afterSeq: head, epoch: known.epoch, reload: true };
  }
  return { conversationId: conv, afterSeq: known.seq, epoch: known.epoch, reload: false };
}
