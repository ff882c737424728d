import { useEffect } from "react";

export const APP_NAME = "Jarvis";

/** The browser tab's title: "<title> · Jarvis", or "Jarvis" with none (and once the page is left). */
export function useDocumentTitle(title: string | null | undefined) {
  useEffect(() => {
    document.title = title ? `${title} · ${APP_NAME}` : APP_NAME;
  }, [title]);
  useEffect(
    () => () => {
      document.title = APP_NAME;
    },
    [],
  );
}
