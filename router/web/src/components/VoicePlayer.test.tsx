import { act, fireEvent, render, screen } from "@testing-library/react";
import { beforeAll, describe, expect, it } from "vitest";
import { fakeApi, withServices } from "../test/helpers";
import type { VoiceClip } from "../lib/voiceQueue";
import { VoicePlayer } from "./VoicePlayer";

const clip = (n: number): VoiceClip => ({ url: `/api/voice/v${n}?expires=1&sig=ab`, transcript: `Sentence ${n}.` });

describe("VoicePlayer", () => {
  // jsdom has no media playback.
  beforeAll(() => {
    HTMLMediaElement.prototype.play = () => Promise.resolve();
  });

  it("plays signed clips in order as they arrive and says when all were played", () => {
    const { api, calls } = fakeApi(() => new Response(null, { status: 500 }));
    const ui = (clips: VoiceClip[]) => withServices(api, <VoicePlayer clips={clips} autoPlay />);
    const { rerender } = render(ui([clip(1)]));
    const audio = () => screen.getByLabelText("Spoken answer") as HTMLAudioElement;
    expect(audio().getAttribute("src")).toBe(clip(1).url);
    rerender(ui([clip(1), clip(2)]));
    expect(screen.getByText("1/2")).toBeInTheDocument();
    act(() => void fireEvent.ended(audio()));
    expect(audio().getAttribute("src")).toBe(clip(2).url);
    act(() => void fireEvent.ended(audio()));
    expect(screen.getByText("Played")).toBeInTheDocument();
    act(() => void fireEvent.click(screen.getByRole("button", { name: "Replay all" })));
    expect(audio().getAttribute("src")).toBe(clip(1).url);
    act(() => void fireEvent.ended(audio()));
    act(() => void fireEvent.ended(audio()));
    // A sentence that arrives after the others ended is next in the player.
    rerender(ui([clip(1), clip(2), clip(3)]));
    expect(audio().getAttribute("src")).toBe(clip(3).url);
    // Signed URLs need no token: nothing was fetched through the API.
    expect(calls).toHaveLength(0);
  });

  it("shows a voice error without hiding the clips that did play", () => {
    const { api } = fakeApi(() => new Response(null, { status: 500 }));
    render(
      withServices(
        api,
        <VoicePlayer
          clips={[clip(1), { url: "", transcript: "Two.", error: { code: "voice_failed", message: "engine down" } }]}
        />,
      ),
    );
    expect(screen.getByLabelText("Spoken answer")).toBeInTheDocument();
    expect(screen.getByTestId("voice-error")).toHaveTextContent("could not be spoken");
  });

  it("shows only the error when the plan has no voice", () => {
    const { api } = fakeApi(() => new Response(null, { status: 500 }));
    render(
      withServices(
        api,
        <VoicePlayer clips={[{ url: "", transcript: "Hi.", error: { code: "voice_unavailable", message: "no" } }]} />,
      ),
    );
    expect(screen.queryByLabelText("Spoken answer")).toBeNull();
    expect(screen.getByTestId("voice-error")).toHaveTextContent("not part of your plan");
  });
});
