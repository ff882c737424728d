import { isValidElement, useRef, type ReactNode } from "react";
import ReactMarkdown from "react-markdown";
import rehypeHighlight from "rehype-highlight";
import remarkGfm from "remark-gfm";
import { CopyButton } from "./CopyButton";

/** The language a highlighted `<code>` names (`hljs language-rust` → `rust`). */
function languageOf(children: ReactNode): string {
  const code = Array.isArray(children) ? children[0] : children;
  if (!isValidElement(code)) return "";
  const cls = String((code.props as { className?: string }).className ?? "");
  return /(?:^|\s)language-([\w+#.-]+)/.exec(cls)?.[1] ?? "";
}

/** A fenced code block: its language and a Copy button above the code. */
function CodeBlock({ children, ...props }: React.HTMLAttributes<HTMLPreElement>) {
  const pre = useRef<HTMLPreElement>(null);
  const lang = languageOf(children);
  return (
    <div className="code-block overflow-hidden rounded-md border border-slate-200 dark:border-slate-700" data-testid="code-block">
      <div className="flex items-center justify-between gap-2 border-b border-slate-200 bg-slate-100 px-2 py-0.5 dark:border-slate-700 dark:bg-slate-800">
        <span className="font-mono text-xs text-slate-600 dark:text-slate-300" data-testid="code-language">
          {lang || "text"}
        </span>
        <CopyButton label={lang ? `Copy ${lang} code` : "Copy code"} text={() => (pre.current?.textContent ?? "").replace(/\n$/, "")} />
      </div>
      <pre ref={pre} {...props}>
        {children}
      </pre>
    </div>
  );
}

/** Markdown with GitHub extensions and highlighted code blocks. Raw HTML is not rendered. */
export default function Markdown({ text }: { text: string }) {
  return (
    <div className="md">
      <ReactMarkdown
        remarkPlugins={[remarkGfm]}
        rehypePlugins={[[rehypeHighlight, { detect: true, ignoreMissing: true }]]}
        components={{
          a: ({ node: _node, ...props }) => <a {...props} target="_blank" rel="noopener noreferrer" />,
          pre: ({ node: _node, ...props }) => <CodeBlock {...props} />,
        }}
      >
        {text}
      </ReactMarkdown>
    </div>
  );
}
