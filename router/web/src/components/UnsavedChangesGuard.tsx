import { useContext, useEffect } from "react";
import { UNSAFE_DataRouterContext, useBlocker } from "react-router";
import { DISCARD_QUESTION } from "../lib/pane";

type Leaving = (from: string, to: string) => boolean;
const otherPath: Leaving = (from, to) => from !== to;

function RouteBlocker({ dirty, leaving }: { dirty: boolean; leaving: Leaving }) {
  const blocker = useBlocker(({ currentLocation, nextLocation }) => dirty && leaving(currentLocation.pathname, nextLocation.pathname));
  useEffect(() => {
    if (blocker.state !== "blocked") return;
    if (window.confirm(DISCARD_QUESTION)) blocker.proceed();
    else blocker.reset();
  }, [blocker]);
  return null;
}

/**
 * While `dirty`, asks before the page is left: closing or reloading the tab (the
 * browser's own `beforeunload` question) and going to another page of the app
 * (react-router's blocker; `leaving` says which moves count, by default any other
 * path). The blocker needs a data router; under a plain one only the tab is guarded.
 */
export function UnsavedChangesGuard({ dirty, leaving = otherPath }: { dirty: boolean; leaving?: Leaving }) {
  const dataRouter = useContext(UNSAFE_DataRouterContext);
  useEffect(() => {
    if (!dirty) return;
    const ask = (e: BeforeUnloadEvent) => {
      e.preventDefault();
      // Older browsers show the question only when returnValue is set.
      e.returnValue = "";
    };
    window.addEventListener("beforeunload", ask);
    return () => window.removeEventListener("beforeunload", ask);
  }, [dirty]);
  return dataRouter ? <RouteBlocker dirty={dirty} leaving={leaving} /> : null;
}
