import { describe, expect, it } from "vitest";
import { initialQueue, playable, queueReducer, type QueueState } from "./voiceQueue";

const run = (s: QueueState, ...events: Parameters<typeof queueReducer>[1][]) => events.reduce(queueReducer, s);

describe("voice queue", () => {
  it("starts the first sentence as soon as it arrives, before the answer ends", () => {
    const s = run(initialQueue(true), { type: "arrived", count: 1 });
    expect(s).toEqual({ index: 0, playing: true, waiting: false });
  });

  it("plays the rest in order and waits for sentences still to come", () => {
    let s = run(initialQueue(true), { type: "arrived", count: 1 }, { type: "arrived", count: 2 });
    expect(s.index).toBe(0);
    s = queueReducer(s, { type: "ended", count: 2 });
    expect(s).toEqual({ index: 1, playing: true, waiting: false });
    s = queueReducer(s, { type: "ended", count: 2 });
    expect(s).toEqual({ index: 2, playing: false, waiting: true });
    // A third sentence arrives after the second ended: it plays at once.
    s = queueReducer(s, { type: "arrived", count: 3 });
    expect(s).toEqual({ index: 2, playing: true, waiting: false });
  });

  it("does not start by itself without autoplay, and a pause stops the chain", () => {
    expect(run(initialQueue(false), { type: "arrived", count: 2 }).playing).toBe(false);
    const s = run(initialQueue(true), { type: "arrived", count: 1 }, { type: "pause" }, { type: "arrived", count: 2 });
    expect(s.playing).toBe(false);
    expect(s.index).toBe(0);
  });

  it("replays from the first sentence", () => {
    const s = run(initialQueue(true), { type: "arrived", count: 2 }, { type: "ended", count: 2 }, { type: "ended", count: 2 });
    expect(s.index).toBe(2);
    expect(queueReducer(s, { type: "replay" })).toEqual({ index: 0, playing: true, waiting: false });
  });

  it("skips clips that carry an error", () => {
    const clips = [
      { url: "/a", transcript: "A." },
      { url: "", transcript: "B.", error: { code: "voice_failed", message: "down" } },
    ];
    expect(playable(clips).map((c) => c.transcript)).toEqual(["A."]);
  });
});
