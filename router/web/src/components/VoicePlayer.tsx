import { useEffect, useState } from "react";
import { useApi } from "../context";
import { getAutoplay } from "../lib/settings";

/** Plays an answer's audio. Same-origin API URLs are fetched with the bearer token. */
export function VoicePlayer({ url, transcript, autoPlay }: { url: string; transcript?: string; autoPlay?: boolean }) {
  const api = useApi();
  const [src, setSrc] = useState<string | null>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let revoke: string | null = null;
    let cancelled = false;
    const sameOrigin = url.startsWith("/") && !url.startsWith("//");
    if (!sameOrigin) {
      setSrc(url);
      return;
    }
    api
      .blob(url)
      .then((b) => {
        if (cancelled) return;
        revoke = URL.createObjectURL(b);
        setSrc(revoke);
      })
      .catch(() => !cancelled && setFailed(true));
    return () => {
      cancelled = true;
      if (revoke) URL.revokeObjectURL(revoke);
    };
  }, [api, url]);
  if (failed) return <p className="text-xs text-red-600">The audio could not be loaded.</p>;
  if (!src) return <p className="text-xs text-slate-500">Loading audio…</p>;
  return (
    <div className="mt-2">
      <audio controls src={src} autoPlay={autoPlay ?? getAutoplay()} aria-label="Spoken answer" className="h-9 w-full max-w-sm" />
      {transcript ? <span className="sr-only">{transcript}</span> : null}
    </div>
  );
}
