import { describe, expect, test } from "vitest";
import { Dedup } from "../src/lib/dedup";

describe("dedup", () => {
  test("a (conversation, sender, client id) is shown once", () => {
    const d = new Dedup();
    expect(d.add("c", "alice", "m1")).toBe(true);
    expect(d.add("c", "alice", "m1")).toBe(false);
    expect(d.add("c", "bob", "m1")).toBe(true); // another sender's id space
    expect(d.add("c2", "alice", "m1")).toBe(true);
    expect(d.has("c", "alice", "m1")).toBe(true);
  });

  test("memory is bounded: the oldest are forgotten first", () => {
    const d = new Dedup(3);
    for (const id of ["1", "2", "3", "4"]) d.add("c", "a", id);
    expect(d.size).toBe(3);
    expect(d.has("c", "a", "1")).toBe(false);
    expect(d.has("c", "a", "4")).toBe(true);
  });

  test("ids with separators cannot collide", () => {
    const d = new Dedup();
    d.add("c", "a:b", "c");
    expect(d.has("c", "a", "b:c")).toBe(false);
  });
});
