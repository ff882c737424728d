// The order in which an answer's spoken sentences play. Pure, so it is easy to
// test: `voice` events append clips while the answer streams; the player starts
// the first as soon as it arrives, moves on when one ends, and waits for the
// next when it has played everything that has arrived so far.

export interface VoiceClip {
  url: string;
  transcript?: string;
  error?: { code: string; message: string };
}

export interface QueueState {
  /** Index (among playable clips) of the clip in the player. */
  index: number;
  /** Whether the player should be playing. */
  playing: boolean;
  /** Played every clip that had arrived; the next one that arrives starts at once. */
  waiting: boolean;
}

export const initialQueue = (autoPlay: boolean): QueueState => ({ index: 0, playing: false, waiting: autoPlay });

/** Clips that have audio (errors are shown, not played). */
export const playable = (clips: VoiceClip[]) => clips.filter((c) => c.url && !c.error);

export type QueueEvent =
  | { type: "arrived"; count: number }
  | { type: "ended"; count: number }
  | { type: "play" }
  | { type: "pause" }
  | { type: "replay" };

export function queueReducer(state: QueueState, event: QueueEvent): QueueState {
  switch (event.type) {
    case "arrived":
      if (!state.waiting) return state;
      if (state.playing || event.count === 0) return state;
      // The first clip, or the one after the last that ended.
      if (state.index < event.count) return { ...state, playing: true, waiting: false };
      return state;
    case "ended":
      if (state.index + 1 < event.count) return { index: state.index + 1, playing: true, waiting: false };
      return { index: state.index + 1, playing: false, waiting: true };
    case "play":
      return { ...state, playing: true, waiting: false };
    case "pause":
      return { ...state, playing: false, waiting: false };
    case "replay":
      return { index: 0, playing: true, waiting: false };
  }
}
