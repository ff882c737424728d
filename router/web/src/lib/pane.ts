// What the chat's side pane shows, and how a message opens something in it.

import { createContext, useContext } from "react";

export type PaneItem =
  | { kind: "document"; id: string; filename: string }
  /** An upload or a workspace file (`/api/files/{id}`). */
  | { kind: "file"; id: string; filename: string; contentType?: string }
  /** The workspace's files, to pick one. */
  | { kind: "files" };

export const DISCARD_QUESTION = "You have unsaved changes. Discard them?";

/** Opens an item in the side pane; null outside the chat page (links go to their pages then). */
export const PaneContext = createContext<((item: PaneItem) => void) | null>(null);

export function useOpenInPane() {
  return useContext(PaneContext);
}

export type PreviewKind = "image" | "pdf" | "markdown" | "code" | "text" | "other";

const CODE_EXT = new Set(
  "c h cc cpp hpp cs css go java js jsx ts tsx mjs cjs json kt lua php py rb rs scala sh bash zsh sql swift toml yaml yml xml html vue svelte r pl".split(" "),
);
const TEXT_TYPE = /^(text\/|application\/(json|xml|javascript|x-sh|x-python|toml|yaml|x-yaml|x-ndjson))/;

/** How a file is previewed, from its name and content type. */
export function previewKind(filename: string, contentType = ""): PreviewKind {
  const type = contentType.toLowerCase().split(";")[0].trim();
  const ext = filename.includes(".") ? filename.split(".").pop()!.toLowerCase() : "";
  if (type.startsWith("image/") || ["png", "jpg", "jpeg", "gif", "webp", "avif", "bmp"].includes(ext)) return "image";
  if (type === "application/pdf" || ext === "pdf") return "pdf";
  if (ext === "md" || ext === "markdown" || type === "text/markdown") return "markdown";
  if (CODE_EXT.has(ext)) return "code";
  if (TEXT_TYPE.test(type) || ["txt", "csv", "tsv", "log", "ini", "cfg", "conf"].includes(ext)) return "text";
  return "other";
}
