/* Syntax-highlighted code, with highlight.js's core and a few languages only
 * (the full bundle would triple the app's size). */
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import json from "highlight.js/lib/languages/json";
import python from "highlight.js/lib/languages/python";
import javascript from "highlight.js/lib/languages/javascript";
import yaml from "highlight.js/lib/languages/yaml";
import { useMemo } from "react";

hljs.registerLanguage("python", python);
hljs.registerLanguage("bash", bash);
hljs.registerLanguage("json", json);
hljs.registerLanguage("javascript", javascript);
hljs.registerLanguage("yaml", yaml);
hljs.registerAliases(["py"], { languageName: "python" });
hljs.registerAliases(["sh", "shell"], { languageName: "bash" });
hljs.registerAliases(["js", "ts", "typescript"], { languageName: "javascript" });

/** highlight.js HTML for `source` (it escapes the text itself). */
export function highlight(source: string, language: string | undefined): string {
  const lang = language && hljs.getLanguage(language) ? language : null;
  if (lang) return hljs.highlight(source, { language: lang, ignoreIllegals: true }).value;
  return hljs.highlightAuto(source, ["python", "bash", "json"]).value;
}

export function CodeBlock({ source, language, title }: { source: string; language?: string; title?: string }) {
  const html = useMemo(() => highlight(source, language), [source, language]);
  return (
    <figure className="code">
      {title && <figcaption>{title}</figcaption>}
      <pre tabIndex={0}>
        <code className="hljs" data-language={language ?? "auto"} dangerouslySetInnerHTML={{ __html: html }} />
      </pre>
    </figure>
  );
}

/** Agent text with ``` fenced blocks shown as highlighted code. */
export function RichText({ text }: { text: string }) {
  const parts = useMemo(() => splitFences(text), [text]);
  return (
    <>
      {parts.map((part, i) =>
        part.code ? (
          <CodeBlock key={i} source={part.text} language={part.language} />
        ) : (
          <p key={i} className="prose">
            {part.text}
          </p>
        ),
      )}
    </>
  );
}

export interface TextPart {
  text: string;
  code: boolean;
  language?: string;
}

export function splitFences(text: string): TextPart[] {
  const parts: TextPart[] = [];
  const fence = /```([\w+-]*)\n([\s\S]*?)```/g;
  let last = 0;
  for (let m = fence.exec(text); m; m = fence.exec(text)) {
    if (m.index > last) parts.push({ text: text.slice(last, m.index).trim(), code: false });
    parts.push({ text: m[2].replace(/\n$/, ""), code: true, language: m[1] || undefined });
    last = m.index + m[0].length;
  }
  if (last < text.length) parts.push({ text: text.slice(last).trim(), code: false });
  return parts.filter((p) => p.code || p.text);
}
