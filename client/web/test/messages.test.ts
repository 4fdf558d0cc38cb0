import { describe, expect, test } from "vitest";
import { humane, tooLarge } from "../src/api";
import { formatSize, initials, typingLine } from "../src/lib/format";

describe("what a person reads", () => {
  test("server messages lose their status-code prefix", () => {
    expect(humane("resource exhausted: slow consumer")).toBe("Slow consumer");
    expect(humane("permission denied: not a member of room:x")).toBe("Not a member of room:x");
    expect(humane("room:x: no such room")).toBe("Room:x: no such room");
  });

  test("an over-size file names the sizes", () => {
    expect(tooLarge("huge.bin", "resource exhausted: attachment is 307200 bytes; the limit is 262144 (--max-attachment)", formatSize))
      .toBe("huge.bin is too large to send (300 KB; the limit is 256 KB).");
    expect(tooLarge("a.zip", "grpc: received message larger than max", formatSize)).toBe("a.zip is too large to send. Grpc: received message larger than max");
  });

  test("sizes, initials and typing lines", () => {
    expect(formatSize(512)).toBe("512 B");
    expect(formatSize(8.7 * 1024)).toBe("8.7 KB");
    expect(formatSize(3 * 1024 * 1024)).toBe("3.0 MB");
    expect(initials("alice")).toBe("A");
    expect(initials("Weekend trip")).toBe("WT");
    expect(typingLine(["bob"])).toBe("bob is typing…");
    expect(typingLine(["bob", "carol"])).toBe("bob and carol are typing…");
    expect(typingLine(["a", "b", "c"])).toBe("3 people are typing…");
  });
});
