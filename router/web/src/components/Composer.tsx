import { useEffect, useId, useRef, useState } from "react";
import { useServices } from "../context";
import type { Attachment } from "../lib/stream";
import type { User } from "../lib/types";
import { PHONE_QUERY, useMediaQuery } from "../lib/useMediaQuery";
import { PendingAttachments, type Uploads } from "./Attachments";
import { PaperclipIcon } from "./MessageView";
import { Button, inputClass } from "./ui";

/** The message box: attachments, voice toggle, Send (Stop while an answer streams). */
export function Composer({
  attach,
  streaming,
  restore,
  onSend,
  onStop,
}: {
  attach: Uploads;
  streaming: boolean;
  /** Text to put back in the box (a message taken back), once per `n`. */
  restore?: { text: string; n: number } | null;
  onSend: (text: string, voice: boolean, files: Attachment[]) => void;
  onStop: () => void;
}) {
  const { api } = useServices();
  const [draft, setDraft] = useState("");
  // Speak the next answer: starts from the saved setting, changed per message here.
  const [voice, setVoice] = useState(false);
  const [voiceAvailable, setVoiceAvailable] = useState(true);
  const inputId = useId();
  const fileInput = useRef<HTMLInputElement>(null);
  const box = useRef<HTMLTextAreaElement>(null);

  const restored = restore?.n;
  useEffect(() => {
    if (restored === undefined || !restore) return;
    setDraft(restore.text);
    box.current?.focus();
    // Only a new `n` restores: the same text twice is two restores.
  }, [restored]);

  useEffect(() => {
    api
      .get<User>("/api/me")
      .then((me) => {
        setVoice(!!me.voice_answers);
        setVoiceAvailable(me.voice_available !== false);
      })
      .catch(() => {});
  }, [api]);

  const canSend = (draft.trim() !== "" || attach.ready.length > 0) && !attach.busy;

  function send(e?: React.FormEvent) {
    e?.preventDefault();
    const files = attach.ready;
    const text = draft.trim() || (files.length > 0 ? `Please look at the attached file${files.length > 1 ? "s" : ""}.` : "");
    if (!text || streaming || attach.busy) return;
    onSend(text, voice, files);
    setDraft("");
    attach.clear();
  }

  return (
    <form onSubmit={send} className="border-t border-slate-200 p-3 dark:border-slate-800">
      <PendingAttachments uploads={attach.uploads} onRemove={attach.remove} />
      <div className="mx-auto flex max-w-3xl items-end gap-2">
        <input
          ref={fileInput}
          type="file"
          multiple
          hidden
          data-testid="file-input"
          onChange={(e) => {
            void attach.add(e.target.files);
            e.target.value = "";
          }}
        />
        <Button variant="ghost" aria-label="Attach files" title="Attach files" onClick={() => fileInput.current?.click()}>
          <PaperclipIcon />
        </Button>
        <label htmlFor={inputId} className="sr-only">Message</label>
        <textarea
          ref={box}
          id={inputId}
          rows={2}
          className={`${inputClass} max-h-48 resize-none`}
          placeholder={useMediaQuery(PHONE_QUERY) ? "Message Jarvis…" : "Message Jarvis… (Enter to send, Shift+Enter for a new line)"}
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
              e.preventDefault();
              send();
            }
          }}
          data-testid="chat-input"
        />
        {voiceAvailable ? (
          <Button
            variant="ghost"
            aria-pressed={voice}
            title={voice ? "Answers are spoken (click for text only)" : "Click to hear the answer spoken"}
            onClick={() => setVoice(!voice)}
            data-testid="voice-toggle"
          >
            <svg aria-hidden viewBox="0 0 16 16" className="h-4 w-4 fill-none stroke-current" strokeWidth="1.3" strokeLinejoin="round">
              <path d="M2 6h3l4-3v10l-4-3H2z" className={voice ? "fill-current" : ""} />
              {voice ? <path d="M11 5.5c1 1.3 1 3.7 0 5M13 3.5c2 2.5 2 6.5 0 9" strokeLinecap="round" /> : <path d="M11.5 6l3 4m0-4l-3 4" strokeLinecap="round" />}
            </svg>
            <span className="sr-only">Speak the answer</span>
          </Button>
        ) : null}
        {streaming ? (
          <Button variant="danger" onClick={onStop}>
            Stop
          </Button>
        ) : (
          <Button type="submit" variant="primary" disabled={!canSend}>
            Send
          </Button>
        )}
      </div>
    </form>
  );
}
