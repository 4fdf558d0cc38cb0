import { describe, expect, test } from "vitest";
import { Positions, planResume } from "../src/lib/positions";

describe("positions", () => {
  test("only move forward within an epoch", () => {
    const p = new Positions();
    expect(p.advance("c", 5, "e1")).toBe(true);
    expect(p.advance("c", 9)).toBe(true);
    expect(p.advance("c", 9)).toBe(false); // seen
    expect(p.advance("c", 7)).toBe(false); // older
    expect(p.get("c")).toEqual({ seq: 9, epoch: "e1" });
  });

  test("gaps are fine: seqs are ordered, not contiguous", () => {
    const p = new Positions();
    p.advance("c", 1, "e");
    expect(p.advance("c", 100)).toBe(true);
    expect(p.get("c")!.seq).toBe(100);
  });

  test("a new epoch starts over", () => {
    const p = new Positions();
    p.advance("c", 50, "old");
    expect(p.advance("c", 3, "new")).toBe(true);
    expect(p.get("c")).toEqual({ seq: 3, epoch: "new" });
  });

  test("resume from where the page was, with its epoch", () => {
    expect(planResume("c", { seq: 40, epoch: "e" }, 45)).toEqual({ conversationId: "c", afterSeq: 40, epoch: "e", reload: false });
  });

  test("a conversation never followed starts at the head", () => {
    expect(planResume("c", undefined, 45)).toEqual({ conversationId: "c", afterSeq: 45, epoch: "", reload: false });
  });

  test("too long a gap jumps to the head and reloads", () => {
    expect(planResume("c", { seq: 10, epoch: "e" }, 5000, 500)).toEqual({ conversationId: "c", afterSeq: 5000, epoch: "e", reload: true });
  });

  test("a head behind the position (a replaced log) resumes with the old epoch so the server can tell", () => {
    const plan = planResume("c", { seq: 90, epoch: "old" }, 3);
    expect(plan).toEqual({ conversationId: "c", afterSeq: 90, epoch: "old", reload: false });
  });
});
