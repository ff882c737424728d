import { useEffect, useReducer, useRef, useState } from "react";
import { useApi } from "../context";
import { chatErrorText } from "../lib/messages";
import { initialQueue, playable, queueReducer, type VoiceClip } from "../lib/voiceQueue";

/** Loads a clip: signed voice URLs play as they are; other same-origin API URLs
 * (older answers' `/api/files/…`) are fetched with the bearer token. */
function useClipSrc(url: string | undefined): { src: string | null; failed: boolean } {
  const api = useApi();
  const [state, setState] = useState<{ src: string | null; failed: boolean }>({ src: null, failed: false });
  useEffect(() => {
    if (!url) return;
    const needsToken = url.startsWith("/api/") && !url.includes("sig=");
    if (!needsToken) {
      setState({ src: url, failed: false });
      return;
    }
    let revoke: string | null = null;
    let cancelled = false;
    setState({ src: null, failed: false });
    api
      .blob(url)
      .then((b) => {
        if (cancelled) return;
        revoke = URL.createObjectURL(b);
        setState({ src: revoke, failed: false });
      })
      .catch(() => !cancelled && setState({ src: null, failed: true }));
    return () => {
      cancelled = true;
      if (revoke) URL.revokeObjectURL(revoke);
    };
  }, [api, url]);
  return state;
}

/** Plays an answer's spoken sentences in order, starting with the first as soon
 * as it arrives (while the answer still streams). Voice errors are shown. */
export function VoicePlayer({ clips, autoPlay }: { clips: VoiceClip[]; autoPlay?: boolean }) {
  const audible = playable(clips);
  const errors = clips.filter((c) => c.error);
  const [queue, dispatch] = useReducer(queueReducer, !!autoPlay, initialQueue);
  const audio = useRef<HTMLAudioElement>(null);
  const current = audible[Math.min(queue.index, Math.max(audible.length - 1, 0))];
  const { src, failed } = useClipSrc(current?.url);

  useEffect(() => dispatch({ type: "arrived", count: audible.length }), [audible.length]);

  useEffect(() => {
    const el = audio.current;
    if (!el || !src) return;
    if (queue.playing && el.paused) {
      // Autoplay may be refused (no user gesture yet): then the controls are there.
      el.play()?.catch?.(() => dispatch({ type: "pause" }));
    }
  }, [queue.playing, queue.index, src]);

  const done = queue.index >= audible.length && audible.length > 0;
  return (
    <div className="mt-2" data-testid="voice-player">
      {audible.length > 0 ? (
        failed ? (
          <p className="text-xs text-red-600">The audio could not be loaded.</p>
        ) : src ? (
          <div className="flex items-center gap-2">
            <audio
              ref={audio}
              controls
              src={src}
              preload="auto"
              aria-label="Spoken answer"
              className="h-9 w-full max-w-sm"
              data-clip={queue.index}
              onEnded={() => dispatch({ type: "ended", count: audible.length })}
              onPlay={() => !queue.playing && dispatch({ type: "play" })}
            />
            <span className="shrink-0 text-xs text-slate-500 dark:text-slate-400" aria-live="polite">
              {done ? "Played" : `${Math.min(queue.index + 1, audible.length)}/${audible.length}`}
            </span>
            {done && audible.length > 1 ? (
              <button type="button" className="shrink-0 text-xs underline" onClick={() => dispatch({ type: "replay" })}>
                Replay all
              </button>
            ) : null}
          </div>
        ) : (
          <p className="text-xs text-slate-500 dark:text-slate-400">Loading audio…</p>
        )
      ) : null}
      {current?.transcript ? <span className="sr-only">{current.transcript}</span> : null}
      {errors.slice(0, 1).map((c, i) => {
        const t = chatErrorText(c.error!.code, c.error!.message);
        return (
          <p key={i} role="status" className="mt-1 text-xs text-amber-700 dark:text-amber-300" data-testid="voice-error">
            {t.title} {t.action}
          </p>
        );
      })}
    </div>
  );
}
